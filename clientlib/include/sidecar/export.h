/* What the client library exports. It is built with hidden visibility, so only declarations marked
 * SIDECAR_API are part of its ABI: the library's internals (and the header-only code it shares
 * with the daemon) stay private to it, free to change without a new SONAME. Plain C, because
 * sidecar_client.h includes it. */
#ifndef SIDECAR_EXPORT_H
#define SIDECAR_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define SIDECAR_API __attribute__((visibility("default")))
#else
#define SIDECAR_API
#endif

#endif /* SIDECAR_EXPORT_H */
