/*
 * token_file.h -- the strict reader of admin_token_file (SPEC "Admin API").
 *
 * The admin bearer token guards raise and reset of high-water marks, so the
 * file is read strictly: one token of 1 to FG_TOKEN_FILE_MAX visible ASCII
 * characters (0x21-0x7E), optionally followed by ONE newline; anything else
 * (NUL, other control bytes, spaces, an empty file, a second line, a longer
 * token) is an error that names the file. A NUL can therefore never cut the
 * token short or leave the API open.
 */
#ifndef FG_TOKEN_FILE_H
#define FG_TOKEN_FILE_H

#include <stdbool.h>
#include <stddef.h>

#define FG_TOKEN_FILE_MAX 4096

/*
 * Read `path` into out (at least FG_TOKEN_FILE_MAX + 1 bytes; NUL-terminated)
 * and its length into *len. *loose is set when group or others may read the
 * file (the caller warns). Returns 0, or FG_EIO (cannot open or read) /
 * FG_ECONFIG (bad content) with a message naming the file in `err`; `out` is
 * then left empty. Never allocates.
 */
int fg_token_file_read(const char *path, char *out, size_t *len, bool *loose, char *err,
                       size_t err_len);

#endif
