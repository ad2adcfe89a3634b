#include "core/err.h"

const char *dv_strerror(int code)
{
    switch (code) {
    case DV_OK: return "success";
    case DV_ENOMEM: return "out of memory";
    case DV_EMALFORMED: return "malformed DNS message";
    case DV_ENOTQUERY: return "not a DNS query";
    case DV_ENOTIMP: return "unsupported opcode";
    case DV_EBADVERS: return "unsupported EDNS version";
    case DV_ESPACE: return "buffer too small";
    case DV_ETIMEOUT: return "timed out";
    case DV_ECONN: return "connection failed";
    case DV_EPROTO: return "protocol error";
    case DV_ETLS: return "TLS failure";
    case DV_ECANCEL: return "cancelled";
    case DV_EMISMATCH: return "answer does not match question";
    case DV_EIO: return "I/O error";
    case DV_EINVAL: return "invalid argument";
    case DV_ESERVFAIL: return "upstream server failure";
    case DV_EAGAIN: return "would block";
    case DV_EHTTP: return "HTTP error status";
    }
    return "unknown error";
}
