/* gxo-sandbox-exec: apply a process sandbox, then exec the program.
 *
 *   gxo-sandbox-exec [OPTION...] -- PROGRAM ARGV0 [ARG...]
 *
 * Options, applied in this order (each one at most where it says "repeatable"):
 *   --cgroup DIR       join the cgroup DIR (writes this pid to DIR/cgroup.procs); repeatable
 *   --seccomp FD       an inherited descriptor holding a compiled classic-BPF program
 *                      (struct sock_filter[], as libseccomp's seccomp_export_bpf writes it); read
 *                      with pread from offset 0 (the descriptor is shared by every child), closed,
 *                      and loaded last, just before execve
 *   --uid N --gid N --groups G,G,...
 *                      switch to that user, group and supplementary groups, after the mounts
 *   --unshare LIST     new namespaces, a comma list of user, mount, pid, ipc, uts, net; a user
 *                      namespace maps the program's uid and gid to themselves (as root it is
 *                      made last, after the user switch; else first); a net namespace
 *                      gets its loopback up; a pid namespace makes the program pid 2 under a
 *                      small init (pid 1) that reaps orphans and passes its status on, while
 *                      this process waits and ends as the program did (same code or signal)
 *   --root DIR         jail: DIR becomes / (pivot_root), with a fresh /proc, a minimal /dev
 *                      and a private /tmp when DIR has those folders
 *   --tmpfs PATH       a fresh, private tmpfs at PATH (mode 1777); repeatable
 *   --bind PATH        PATH of the caller's tree mounted at the same path (the workspace, which
 *                      may lie under a private /tmp); its parent folders are made when
 *                      missing; repeatable
 *   --ro PATH          PATH (in the new root) made read-only, with everything under it; repeatable
 *   --chdir DIR        the working directory, set after the mounts and the user switch
 *   --nnp              set no_new_privs (prctl PR_SET_NO_NEW_PRIVS)
 *   --probe            do everything but exec, then exit 0 (a machine check before a run)
 *
 * Mount options need "mount" in --unshare.  The environment is passed on unchanged.  On a
 * failure the program is not run: one line on stderr, "gxo-sandbox-exec: <what>: <why>", and
 * exit 126 (the sandbox could not be applied) or 127 (exec failed).  No shell, nothing setuid.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_LIST 64

static const char *cgroups[MAX_LIST];
static int n_cgroups;
static const char *tmpfses[MAX_LIST];
static int n_tmpfs;
static const char *binds[MAX_LIST];
static int bind_fds[MAX_LIST];
static int n_binds;
static const char *ros[MAX_LIST];
static int n_ros;

static __attribute__((noreturn)) void die(int code, const char *fmt, ...);

/* format into a fixed buffer; a path that does not fit is an error, never cut */
#define FMT(buf, ...) do { \
        int n_ = snprintf(buf, sizeof buf, __VA_ARGS__); \
        if (n_ < 0 || (size_t)n_ >= sizeof buf) { errno = ENAMETOOLONG; die(126, "a path is too long"); } \
    } while (0)

static __attribute__((noreturn)) void die(int code, const char *fmt, ...) {
    int err = errno;
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (err)
        fprintf(stderr, "gxo-sandbox-exec: %s: %s\n", what, strerror(err));
    else
        fprintf(stderr, "gxo-sandbox-exec: %s\n", what);
    _exit(code);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        die(126, "cannot open %s", path);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        die(126, "cannot write %s", path);
    close(fd);
}

static long number(const char *opt, const char *text) {
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0 || errno)
        die(126, "%s wants a number, got '%s'", opt, text);
    return v;
}

static void add(const char **list, int *n, const char *opt, const char *value) {
    if (*n >= MAX_LIST) {
        errno = 0;
        die(126, "too many %s options (at most %d)", opt, MAX_LIST);
    }
    list[(*n)++] = value;
}

/* mkdir -p, each new folder 0755 */
static void make_dirs(const char *path) {
    char buf[4096];
    if (strlen(path) >= sizeof buf) {
        errno = ENAMETOOLONG;
        die(126, "cannot make %s", path);
    }
    strcpy(buf, path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                die(126, "cannot make the mount point %s", buf);
            *p = c;
            if (c == '\0')
                break;
        }
    }
}

static void bring_up_loopback(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        die(126, "cannot open a socket to bring up lo");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
        die(126, "cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0)
        die(126, "cannot bring up lo in the new network namespace");
    close(s);
}

/* the flags a read-only remount must keep (in a user namespace the others are locked) */
static unsigned long kept_flags(const char *path) {
    struct statvfs sv;
    unsigned long flags = 0;
    if (statvfs(path, &sv) != 0)
        return 0;
    if (sv.f_flag & ST_NOSUID) flags |= MS_NOSUID;
    if (sv.f_flag & ST_NODEV) flags |= MS_NODEV;
    if (sv.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
    if (sv.f_flag & ST_NOATIME) flags |= MS_NOATIME;
    if (sv.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (sv.f_flag & ST_RELATIME) flags |= MS_RELATIME;
    return flags;
}

static void read_only(const char *path) {
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0)
        die(126, "cannot bind %s (read_only_paths)", path);
#ifdef SYS_mount_setattr
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, AT_RECURSIVE, &attr, sizeof attr) == 0)
        return;
#endif
    /* an older kernel: the top mount only */
    if (mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | kept_flags(path), NULL) != 0)
        die(126, "cannot make %s read-only (read_only_paths)", path);
}

static void minimal_dev(const char *dev) {
    char path[4096];
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0)
        die(126, "cannot mount a tmpfs on %s", dev);
    static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
        char host[64];
        snprintf(host, sizeof host, "/dev/%s", nodes[i]);
        FMT(path, "%s/%s", dev, nodes[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0)
            die(126, "cannot make %s", path);
        close(fd);
        if (mount(host, path, NULL, MS_BIND, NULL) != 0)
            die(126, "cannot bind %s", host);
    }
    static const char *const links[][2] = {
        {"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
        FMT(path, "%s/%s", dev, links[i][1]);
        if (symlink(links[i][0], path) != 0)
            die(126, "cannot make %s", path);
    }
    FMT(path, "%s/shm", dev);
    if (mkdir(path, 01777) != 0 || mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0)
        die(126, "cannot mount %s", path);
}

/* In a new user namespace: map the uid and gid it was made with to themselves. */
static void map_self(uid_t uid, gid_t gid) {
    char map[64];
    int fd = open("/proc/self/setgroups", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (write(fd, "deny", 4) != 4) { /* an older kernel: no such control */ }
        close(fd);
    }
    FMT(map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    write_file("/proc/self/uid_map", map);
    FMT(map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    write_file("/proc/self/gid_map", map);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The mounts, in the new mount namespace.  root: the jail (NULL: the caller's tree). */
static void set_up_mounts(const char *root, int new_pid_ns) {
    char path[4096];
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
        die(126, "cannot make the mounts private");
    const char *base = root ? root : "";
    if (root) {
        if (mount(root, root, NULL, MS_BIND | MS_REC, NULL) != 0)
            die(126, "cannot bind the root filesystem %s", root);
        FMT(path, "%s/proc", root);
        if (is_dir(path)) {
            if (!new_pid_ns || mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
                if (mount("/proc", path, NULL, MS_BIND | MS_REC, NULL) != 0)
                    die(126, "cannot mount %s", path);
        }
        FMT(path, "%s/dev", root);
        if (is_dir(path))
            minimal_dev(path);
        FMT(path, "%s/tmp", root);
        if (is_dir(path) && mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0)
            die(126, "cannot mount a tmpfs on %s", path);
    } else if (new_pid_ns) {
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
            die(126, "cannot mount /proc for the new pid namespace");
    }
    for (int i = 0; i < n_tmpfs; i++) {
        FMT(path, "%s%s", base, tmpfses[i]);
        if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") != 0)
            die(126, "cannot mount a private tmpfs on %s", path);
    }
    for (int i = 0; i < n_binds; i++) {
        char source[64];
        FMT(path, "%s%s", base, binds[i]);
        make_dirs(path);
        snprintf(source, sizeof source, "/proc/self/fd/%d", bind_fds[i]);
        if (mount(source, path, NULL, MS_BIND | MS_REC, NULL) != 0)
            die(126, "cannot bind %s", binds[i]);
        close(bind_fds[i]);
    }
    for (int i = 0; i < n_ros; i++) {
        FMT(path, "%s%s", base, ros[i]);
        read_only(path);
    }
    if (root) {
        if (chdir(root) != 0)
            die(126, "cannot enter the root filesystem %s", root);
        if (syscall(SYS_pivot_root, ".", ".") != 0)
            die(126, "cannot pivot_root into %s", root);
        if (umount2(".", MNT_DETACH) != 0)
            die(126, "cannot detach the old root");
        if (chdir("/") != 0)
            die(126, "cannot enter the new root");
    }
}

static int status_pipe[2] = {-1, -1};
static volatile sig_atomic_t got_signal;
static void note_signal(int sig) { got_signal = sig; }

/* Stay alive through the signals a process group gets (the program gets them too), so that
 * the status passed on is the program's. */
static void hold_signals(void) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_signal;
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        sigaction(sigs[i], &sa, NULL);
}

/* End as the wait status says: the same exit code, or the same signal (without a core). */
static __attribute__((noreturn)) void end_as(int status) {
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        kill(getpid(), sig);
        _exit(128 + sig);
    }
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 126);
}

static int wait_for(pid_t pid) {
    int status;
    for (;;) {
        pid_t got = waitpid(pid, &status, 0);
        if (got == pid)
            return status;
        if (got < 0 && errno != EINTR)
            die(126, "cannot wait for the sandboxed process");
    }
}

int main(int argc, char **argv) {
    int nnp = 0, probe = 0, seccomp_fd = -1, i;
    long uid = -1, gid = -1;
    const char *groups = NULL, *unshare_list = NULL, *root = NULL, *workdir = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "--nnp") == 0) { nnp = 1; continue; }
        if (strcmp(a, "--probe") == 0) { probe = 1; continue; }
        if (i + 1 >= argc) {
            errno = 0;
            die(126, "option %s wants a value", a);
        }
        const char *v = argv[++i];
        if (strcmp(a, "--seccomp") == 0) seccomp_fd = (int)number(a, v);
        else if (strcmp(a, "--cgroup") == 0) add(cgroups, &n_cgroups, a, v);
        else if (strcmp(a, "--uid") == 0) uid = number(a, v);
        else if (strcmp(a, "--gid") == 0) gid = number(a, v);
        else if (strcmp(a, "--groups") == 0) groups = v;
        else if (strcmp(a, "--unshare") == 0) unshare_list = v;
        else if (strcmp(a, "--root") == 0) root = v;
        else if (strcmp(a, "--tmpfs") == 0) add(tmpfses, &n_tmpfs, a, v);
        else if (strcmp(a, "--bind") == 0) add(binds, &n_binds, a, v);
        else if (strcmp(a, "--ro") == 0) add(ros, &n_ros, a, v);
        else if (strcmp(a, "--chdir") == 0) workdir = v;
        else {
            errno = 0;
            die(126, "unknown option %s", a);
        }
    }
    if (argc - i < 2) {
        errno = 0;
        die(126, "usage: gxo-sandbox-exec [OPTION...] -- PROGRAM ARGV0 [ARG...]");
    }
    char *program = argv[i];
    char **program_argv = argv + i + 1;

    /* 1. the cgroups (before anything can fork) */
    for (int c = 0; c < n_cgroups; c++) {
        char path[4096], pid[32];
        FMT(path, "%s/cgroup.procs", cgroups[c]);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        write_file(path, pid);
    }

    /* 2. the seccomp filter, read now (the descriptor may not be reachable later) */
    struct sock_filter *insns = NULL;
    unsigned short count = 0;
    if (seccomp_fd >= 0) {
        struct stat st;
        if (fstat(seccomp_fd, &st) != 0)
            die(126, "cannot read the seccomp filter");
        if (st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0
            || st.st_size / sizeof(struct sock_filter) > BPF_MAXINSNS) {
            errno = EINVAL;
            die(126, "cannot read the seccomp filter");
        }
        insns = malloc((size_t)st.st_size);
        if (insns == NULL)
            die(126, "cannot read the seccomp filter");
        ssize_t got = 0;
        while (got < st.st_size) {
            ssize_t n = pread(seccomp_fd, (char *)insns + got, (size_t)(st.st_size - got), got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n == 0)
                    errno = EIO;
                die(126, "cannot read the seccomp filter");
            }
            got += n;
        }
        close(seccomp_fd);
        count = (unsigned short)(st.st_size / sizeof(struct sock_filter));
    }

    /* 3. the namespaces asked for */
    int flags = 0;
    if (unshare_list) {
        char list[256];
        FMT(list, "%s", unshare_list);
        for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (strcmp(tok, "user") == 0) flags |= CLONE_NEWUSER;
            else if (strcmp(tok, "mount") == 0) flags |= CLONE_NEWNS;
            else if (strcmp(tok, "pid") == 0) flags |= CLONE_NEWPID;
            else if (strcmp(tok, "ipc") == 0) flags |= CLONE_NEWIPC;
            else if (strcmp(tok, "uts") == 0) flags |= CLONE_NEWUTS;
            else if (strcmp(tok, "net") == 0) flags |= CLONE_NEWNET;
            else {
                errno = 0;
                die(126, "unknown namespace '%s'", tok);
            }
        }
    }
    if ((root || n_tmpfs || n_binds || n_ros) && !(flags & CLONE_NEWNS)) {
        errno = 0;
        die(126, "mount options need a mount namespace (--unshare mount)");
    }
    /* As root, the user namespace is made last, after the mounts and the user switch: it then
     * maps the user the program runs as.  Without root it comes first, with the others, which
     * it makes possible (as bubblewrap does). */
    int user_last = (flags & CLONE_NEWUSER) && geteuid() == 0;
    int first = user_last ? flags & ~CLONE_NEWUSER : flags;

    #define SWITCH_USER() do { \
        if (groups) { \
            gid_t list[MAX_LIST]; int n = 0; char buf[1024]; \
            FMT(buf, "%s", groups); \
            for (char *s2 = NULL, *t = strtok_r(buf, ",", &s2); t; t = strtok_r(NULL, ",", &s2)) { \
                if (n == MAX_LIST) { errno = 0; die(126, "more than %d supplementary groups", MAX_LIST); } \
                list[n++] = (gid_t)number("--groups", t); \
            } \
            if (setgroups((size_t)n, list) != 0) die(126, "cannot set the supplementary groups"); \
        } else if ((uid >= 0 || gid >= 0) && setgroups(0, NULL) != 0) \
            die(126, "cannot drop the supplementary groups"); \
        if (gid >= 0 && setresgid((gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) die(126, "cannot switch to gid %ld", gid); \
        if (uid >= 0 && setresuid((uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) die(126, "cannot switch to uid %ld", uid); \
    } while (0)

    if (first && unshare(first) != 0)
        die(126, "cannot create the namespaces (%s)", unshare_list);
    if (first & CLONE_NEWUSER)
        map_self(geteuid(), getegid());
    if (flags & CLONE_NEWNET)
        bring_up_loopback();
    /* opened in the new mount namespace, before a private /tmp may hide them */
    for (int b = 0; b < n_binds; b++) {
        bind_fds[b] = open(binds[b], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (bind_fds[b] < 0)
            die(126, "cannot open %s", binds[b]);
    }

    /* a pid namespace: this process waits; its child is pid 1 (an init), the program pid 2 */
    if (flags & CLONE_NEWPID) {
        hold_signals();
        if (pipe2(status_pipe, O_CLOEXEC) != 0)
            die(126, "cannot make a pipe");
        pid_t init = fork();
        if (init < 0)
            die(126, "cannot fork into the new pid namespace");
        if (init > 0) {
            close(status_pipe[1]);
            int status = wait_for(init), program_status;
            ssize_t n;
            do
                n = read(status_pipe[0], &program_status, sizeof program_status);
            while (n < 0 && errno == EINTR);
            end_as(n == (ssize_t)sizeof program_status ? program_status : status);
        }
        close(status_pipe[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    }
    if (flags & CLONE_NEWNS)
        set_up_mounts(root, (flags & CLONE_NEWPID) != 0);
    SWITCH_USER();
    if (user_last) {
        uid_t self_uid = geteuid();
        gid_t self_gid = getegid();
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);  /* a uid change cleared it: /proc/self/uid_map must stay ours */
        if (unshare(CLONE_NEWUSER) != 0)
            die(126, "cannot create the user namespace");
        map_self(self_uid, self_gid);
    }
    if (workdir && chdir(workdir) != 0)
        die(126, "cannot enter the working directory %s%s", workdir,
            errno == EACCES && uid >= 0 ? " as the sandbox's user" : "");
    if (probe)
        _exit(0);

    if (flags & CLONE_NEWPID) {
        /* pid 1: start the program as pid 2, reap every orphan, and hand the program's wait
         * status to the waiting parent, which ends the same way */
        hold_signals();
        pid_t child = fork();
        if (child < 0)
            die(126, "cannot start the program in the pid namespace");
        if (child > 0) {
            for (;;) {
                int status;
                pid_t got = waitpid(-1, &status, 0);
                if (got == child) {
                    /* pid 1 cannot die of most signals: the parent is told the raw status */
                    if (write(status_pipe[1], &status, sizeof status) != (ssize_t)sizeof status)
                        _exit(126);
                    _exit(0);
                }
                if (got < 0 && errno == ECHILD)
                    _exit(126);
            }
        }
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        for (int s = 1; s < 32; s++)
            sigaction(s, &sa, NULL);
    }

    /* 4. no_new_privs, then the filter, then the program */
    if (nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        die(126, "cannot set no_new_privs");
    if (insns != NULL) {
        struct sock_fprog prog = {.len = count, .filter = insns};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
            int err = errno;
            if (err != ENOSYS || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
                errno = err;
                die(126, "cannot load the seccomp filter");
            }
        }
    }
    execve(program, program_argv, environ);
    die(127, "cannot exec %s", program);
}
