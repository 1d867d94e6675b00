/* gxo-sandbox-exec: apply a process sandbox, then exec the program.
 *
 *   gxo-sandbox-exec NNP FD PROGRAM ARGV0 [ARG...]
 *
 * NNP is "1" to set no_new_privs (prctl PR_SET_NO_NEW_PRIVS) or "0" to leave it.  FD is "-" for
 * no seccomp filter, or the number of an inherited descriptor holding a compiled classic-BPF
 * program (struct sock_filter[], as libseccomp's seccomp_export_bpf writes it); it is read with
 * pread from offset 0 (the descriptor is shared by every child), closed, and loaded last, just
 * before execve.  The environment is passed on unchanged.  On a failure the program is not run:
 * one line on stderr and exit 126 (the sandbox could not be applied) or 127 (exec failed).
 * No shell, no allocation beyond the filter, nothing setuid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

static int fail(int code, const char *what, int err) {
    fprintf(stderr, "gxo-sandbox-exec: %s: %s\n", what, strerror(err));
    return code;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: gxo-sandbox-exec NNP FD PROGRAM ARGV0 [ARG...]\n");
        return 126;
    }
    struct sock_filter *insns = NULL;
    unsigned short count = 0;
    if (strcmp(argv[2], "-") != 0) {
        char *end = NULL;
        long fd = strtol(argv[2], &end, 10);
        struct stat st;
        if (*argv[2] == '\0' || *end != '\0' || fd < 0 || fstat((int)fd, &st) != 0)
            return fail(126, "cannot read the seccomp filter", errno ? errno : EBADF);
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0
            || st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS)
            return fail(126, "cannot read the seccomp filter", EINVAL);
        insns = malloc((size_t)st.st_size);
        if (insns == NULL)
            return fail(126, "cannot read the seccomp filter", ENOMEM);
        ssize_t got = 0;
        while (got < st.st_size) {
            ssize_t n = pread((int)fd, (char *)insns + got, (size_t)(st.st_size - got), got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return fail(126, "cannot read the seccomp filter", n < 0 ? errno : EIO);
            got += n;
        }
        close((int)fd);
        count = (unsigned short)(st.st_size / sizeof(struct sock_filter));
    }
    if (strcmp(argv[1], "1") == 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return fail(126, "cannot set no_new_privs", errno);
    if (insns != NULL) {
        struct sock_fprog prog = {.len = count, .filter = insns};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
            int err = errno;
            if (err != ENOSYS || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
                return fail(126, "cannot load the seccomp filter", err);
        }
    }
    execve(argv[3], argv + 4, environ);
    int err = errno;
    char what[512];
    snprintf(what, sizeof what, "cannot exec %s", argv[3]);
    return fail(127, what, err);
}
