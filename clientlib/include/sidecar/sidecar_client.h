/* C API of the sidecar client library, for other languages (Python ctypes, Go cgo, Rust FFI).
 *
 *   sidecar_client* client = NULL;
 *   if (sidecar_connect("resnet", 5000, &client) != SIDECAR_OK) {
 *     fprintf(stderr, "%s\n", sidecar_connect_error());
 *   }
 *   int64_t shape[] = {1, 3, 224, 224};
 *   sidecar_tensor input = {SIDECAR_FLOAT32, 4, shape, pixels, sizeof pixels};
 *   sidecar_tensor outputs[8];
 *   size_t output_count = 8;
 *   if (sidecar_infer(client, &input, 1, outputs, &output_count, 1000000) != SIDECAR_OK) {
 *     fprintf(stderr, "%s\n", sidecar_last_error(client));
 *   }
 *   // outputs[i].data points into shared memory, valid until the next call on this client.
 *   sidecar_close(client);
 *
 * A handle is not thread-safe: one per thread. A forked child cannot use its parent's handle.
 */
#ifndef SIDECAR_CLIENT_H
#define SIDECAR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "sidecar/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Same values as sidecar::ErrorCode. */
typedef enum sidecar_status {
  SIDECAR_OK = 0,
  SIDECAR_NOT_RUNNING,
  SIDECAR_NOT_READY,
  SIDECAR_VERSION_MISMATCH,
  SIDECAR_TOO_MANY_CLIENTS,
  SIDECAR_INVALID_ARGUMENT,
  SIDECAR_REJECTED,
  SIDECAR_MODEL_ERROR,
  SIDECAR_UNSUPPORTED_OUTPUT,
  SIDECAR_OUTPUT_TOO_LARGE,
  SIDECAR_TIMEOUT,
  SIDECAR_SIDECAR_GONE,
  SIDECAR_SHUTTING_DOWN,
  SIDECAR_DEADLINE_EXCEEDED,
  SIDECAR_OVERLOADED,
  SIDECAR_CANCELLED,
  SIDECAR_BUSY,
  SIDECAR_PROTOCOL_ERROR,
  SIDECAR_PERMISSION_DENIED, /* the socket's permissions or the sidecar's --allow-user/--allow-group */
  SIDECAR_UNTRUSTED,         /* the process behind the socket is not the sidecar's user */
  SIDECAR_OUT_OF_MEMORY      /* the sidecar could not commit this client's channel */
} sidecar_status;

/* Same values as sidecar::DType. */
typedef enum sidecar_dtype {
  SIDECAR_FLOAT32 = 1,
  SIDECAR_FLOAT64 = 2,
  SIDECAR_FLOAT16 = 3,
  SIDECAR_BFLOAT16 = 4,
  SIDECAR_INT64 = 5,
  SIDECAR_INT32 = 6,
  SIDECAR_INT16 = 7,
  SIDECAR_INT8 = 8,
  SIDECAR_UINT8 = 9,
  SIDECAR_BOOL = 10
} sidecar_dtype;

/* Same values as sidecar::CacheLookup. */
typedef enum sidecar_cache_lookup {
  SIDECAR_CACHE_IN_CLIENT = 0, /* the default: a hit costs no round trip */
  SIDECAR_CACHE_IN_SIDECAR = 1,
  SIDECAR_CACHE_OFF = 2 /* every call runs the model; nothing is stored */
} sidecar_cache_lookup;

typedef struct sidecar_tensor {
  int32_t dtype; /* a sidecar_dtype */
  int32_t rank;
  const int64_t* shape;
  const void* data;
  size_t bytes;
} sidecar_tensor;

typedef struct sidecar_client sidecar_client;

/* Waits up to timeout_ms for the sidecar named `name` to be ready and gets a channel of its own.
 * The socket is looked for in $INFERENCE_SIDECAR_RUNTIME_DIR, /run/inference-sidecar, then
 * $XDG_RUNTIME_DIR/inference-sidecar. After a sidecar restart the next call reconnects. */
SIDECAR_API sidecar_status sidecar_connect(const char* name, int64_t timeout_ms, sidecar_client** out);
/* Why the last sidecar_connect on this thread failed. */
SIDECAR_API const char* sidecar_connect_error(void);

/* Runs the model. On entry *output_count is the capacity of `outputs`; on return, the number of
 * outputs. Output data lives in shared memory until the next call on this client. */
SIDECAR_API sidecar_status sidecar_infer(sidecar_client* client, const sidecar_tensor* inputs, size_t input_count,
                                         sidecar_tensor* outputs, size_t* output_count, int64_t timeout_us);

/* Asynchronous calls: up to 16 in flight per client. sidecar_submit copies the inputs into shared
 * memory (or finds the result in the cache at once); timeout_us is the request's deadline.
 * sidecar_wait and sidecar_try_get fill `outputs` like sidecar_infer, pointing into this client's
 * memory until the next call that returns outputs; sidecar_try_get returns SIDECAR_NOT_READY while
 * the answer has not come. sidecar_cancel keeps a request that has not started from running (its
 * wait then returns SIDECAR_CANCELLED). */
SIDECAR_API sidecar_status sidecar_submit(sidecar_client* client, const sidecar_tensor* inputs, size_t input_count,
                                          int64_t timeout_us, uint64_t* handle);
SIDECAR_API sidecar_status sidecar_wait(sidecar_client* client, uint64_t handle, sidecar_tensor* outputs,
                                        size_t* output_count, int64_t timeout_us);
SIDECAR_API sidecar_status sidecar_try_get(sidecar_client* client, uint64_t handle, sidecar_tensor* outputs,
                                           size_t* output_count);
SIDECAR_API sidecar_status sidecar_cancel(sidecar_client* client, uint64_t handle);

/* Where this client's calls are looked up in the sidecar's result cache, from now on. */
SIDECAR_API sidecar_status sidecar_set_cache_lookup(sidecar_client* client, sidecar_cache_lookup lookup);
/* 1 when the last sidecar_infer was answered from the cache (here or in the sidecar), else 0. */
SIDECAR_API int sidecar_last_call_cached(const sidecar_client* client);

/* The message of the last failed call on this client ("" after a success). */
SIDECAR_API const char* sidecar_last_error(const sidecar_client* client);
SIDECAR_API const char* sidecar_status_name(sidecar_status status);

SIDECAR_API void sidecar_close(sidecar_client* client);

#ifdef __cplusplus
}
#endif

#endif /* SIDECAR_CLIENT_H */
