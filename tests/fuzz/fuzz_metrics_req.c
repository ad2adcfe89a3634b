/* libFuzzer target for the metrics endpoint's request parser, which reads
 * whatever a local client sends: the path and Authorization value it
 * returns must lie inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the server hands the parser a NUL-terminated copy */
    char *req = malloc(size + 1);
    struct metrics_req r;

    if (!req)
        return 0;
    memcpy(req, data, size);
    req[size] = 0;
    if (metrics_parse_request(req, size, &r) == 0) {
        CHECK(r.path >= req && r.path + r.path_len <= req + size);
        CHECK(!r.auth || (r.auth >= req && r.auth + r.auth_len <= req + size));
    }
    free(req);
    return 0;
}
