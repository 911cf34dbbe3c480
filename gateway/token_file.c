/* token_file.c -- the strict admin token file reader. See token_file.h. */
#include "gateway/token_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy/error.h"

int fg_token_file_read(const char *path, char *out, size_t *len, bool *loose, char *err,
                       size_t err_len)
{
    out[0] = '\0';
    *len = 0;
    *loose = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, err_len, "admin_token_file %s: %s", path, strerror(errno));
        return FG_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "admin_token_file %s: not a regular file", path);
        close(fd);
        return FG_EIO;
    }
    *loose = (st.st_mode & (S_IRGRP | S_IROTH)) != 0;
    /* one byte more than a token and its newline: tells "too long" apart */
    char buf[FG_TOKEN_FILE_MAX + 2];
    size_t n = 0;
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            snprintf(err, err_len, "admin_token_file %s: %s", path, strerror(errno));
            close(fd);
            return FG_EIO;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    size_t tl = n;
    if (tl && buf[tl - 1] == '\n') tl--; /* one trailing newline is ignored */
    if (tl == 0) {
        snprintf(err, err_len, "admin_token_file %s is empty: it must hold one token", path);
        return FG_ECONFIG;
    }
    if (tl > FG_TOKEN_FILE_MAX) {
        snprintf(err, err_len, "admin_token_file %s: the token is longer than %d characters", path,
                 FG_TOKEN_FILE_MAX);
        return FG_ECONFIG;
    }
    for (size_t i = 0; i < tl; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c < 0x21 || c > 0x7E) {
            snprintf(err, err_len,
                     "admin_token_file %s: byte %zu is 0x%02X; the token must be visible ASCII "
                     "(0x21-0x7E) with at most one trailing newline",
                     path, i + 1, c);
            return FG_ECONFIG;
        }
    }
    memcpy(out, buf, tl);
    out[tl] = '\0';
    *len = tl;
    return 0;
}
