/* infer.cpp in C, against the C API of the installed library, built with pkg-config:
 *
 *   cc infer.c $(pkg-config --cflags --libs sidecar-client) -o infer_c && ./infer_c NAME
 *
 * (PKG_CONFIG_PATH=PREFIX/lib/pkgconfig for a library installed under PREFIX.) */
#include <sidecar/sidecar_client.h>
#include <stdint.h>
#include <stdio.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SIDECAR_NAME\n", argv[0]);
    return 2;
  }
  sidecar_client* client = NULL;
  /* 30 s: covers a sidecar still warming up. */
  sidecar_status status = sidecar_connect(argv[1], 30000, &client);
  if (status != SIDECAR_OK) {
    fprintf(stderr, "connect: %s: %s\n", sidecar_status_name(status), sidecar_connect_error());
    return 1;
  }

  /* The same input as infer.cpp, so that the two programs' outputs can be compared. */
  float input[64];
  for (int i = 0; i < 64; ++i) input[i] = (float)(i % 7) * 0.25f - 0.5f;
  const int64_t shape[] = {1, 64};
  const sidecar_tensor tensor = {SIDECAR_FLOAT32, 2, shape, input, sizeof input};
  sidecar_tensor outputs[8];
  size_t output_count = 8;
  status = sidecar_infer(client, &tensor, 1, outputs, &output_count, 5000000);
  if (status != SIDECAR_OK) {
    fprintf(stderr, "infer: %s: %s\n", sidecar_status_name(status), sidecar_last_error(client));
    sidecar_close(client);
    return 1;
  }
  if (output_count < 1 || outputs[0].dtype != SIDECAR_FLOAT32) {
    fprintf(stderr, "expected a float32 output\n");
    sidecar_close(client);
    return 1;
  }
  /* The format of sidecar::describe, as infer.cpp prints it. */
  printf("[");
  for (int32_t d = 0; d < outputs[0].rank; ++d) printf("%s%lld", d ? ", " : "", (long long)outputs[0].shape[d]);
  printf("] float32:");
  const float* values = (const float*)outputs[0].data;
  for (size_t i = 0; i < outputs[0].bytes / sizeof(float); ++i) printf(" %.6g", values[i]);
  printf("\n");
  sidecar_close(client);
  return 0;
}
