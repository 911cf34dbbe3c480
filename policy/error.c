/* error.c -- messages and names for the codes of error.h. */
#include "policy/error.h"

const char *fg_strerror(int err)
{
    switch (err) {
    case FG_OK:
        return "success";
#define FG_ERR_MSG(name, msg)                                                                      \
    case FG_E##name:                                                                               \
        return msg;
        FG_ERRORS(FG_ERR_MSG)
#undef FG_ERR_MSG
    default:
        return "unknown error";
    }
}

const char *fg_err_name(int err)
{
    switch (err) {
    case FG_OK:
        return "OK";
#define FG_ERR_NAME(name, msg)                                                                     \
    case FG_E##name:                                                                               \
        return #name;
        FG_ERRORS(FG_ERR_NAME)
#undef FG_ERR_NAME
    default:
        return "UNKNOWN";
    }
}
