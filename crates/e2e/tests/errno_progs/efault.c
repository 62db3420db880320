#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <signal.h>
#include <setjmp.h>

static sigjmp_buf env;
static void on_segv(int sig) { (void)sig; siglongjmp(env, 1); }

static void show(const char *what, long r) {
    if (r < 0) printf("%-28s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-28s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    if (chdir(dir)) { perror("chdir"); return 1; }
    long pg = sysconf(_SC_PAGESIZE);
    /* two pages: rw then none */
    char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(m + pg, pg, PROT_NONE);
    char *bad = m + pg;           /* inaccessible */
    char *edge = m + pg - 16;     /* 16 good bytes then bad */
    char *kern = (char *)0xffffffffff600000UL; /* vsyscall page / kernel half */
    char *wild = (char *)1;
    int fd = open("f", O_CREAT | O_RDWR | O_TRUNC, 0644);
    T("write ok", write(fd, "0123456789abcdefghijklmnopqrstuvwxyz", 36));
    T("lseek", lseek(fd, 0, SEEK_SET));
    T("read bad", read(fd, bad, 8));
    T("pos after read bad", lseek(fd, 0, SEEK_CUR));
    T("read wild", read(fd, wild, 8));
    T("read kernel", read(fd, kern, 8));
    T("read edge(32)", read(fd, edge, 32));
    T("pos after read edge", lseek(fd, 0, SEEK_CUR));
    T("pread bad", pread(fd, bad, 8, 0));
    T("write bad", write(fd, bad, 8));
    T("write edge(32)", write(fd, edge, 32));
    T("pos after write edge", lseek(fd, 0, SEEK_CUR));
    T("pwrite bad", pwrite(fd, bad, 8, 0));
    T("pwrite kernel", pwrite(fd, kern, 8, 0));
    struct iovec iov[2] = {{m, 4}, {bad, 4}};
    T("writev bad base", writev(fd, iov, 2));
    T("readv bad base", preadv(fd, iov, 2, 0));
    T("writev bad iov", writev(fd, (struct iovec *)bad, 1));
    T("readv bad iov", readv(fd, (struct iovec *)bad, 1));
    T("fstat bad", syscall(SYS_fstat, fd, bad));
    T("fstatat bad path", syscall(SYS_newfstatat, AT_FDCWD, bad, m, 0));
    T("stat bad buf", syscall(SYS_stat, "f", bad));
    T("stat bad path", syscall(SYS_stat, bad, m));
    T("lstat wild path", syscall(SYS_lstat, wild, m));
    T("statx bad buf", syscall(SYS_statx, AT_FDCWD, "f", 0, STATX_BASIC_STATS, bad));
    T("statx bad path", syscall(SYS_statx, AT_FDCWD, bad, 0, STATX_BASIC_STATS, m));
    symlink("f", "l");
    T("readlink bad buf", syscall(SYS_readlink, "l", bad, 64));
    T("readlink bad path", syscall(SYS_readlink, kern, m, 64));
    T("access bad", syscall(SYS_access, bad, F_OK));
    T("faccessat bad", syscall(SYS_faccessat, AT_FDCWD, wild, F_OK));
    T("truncate bad", syscall(SYS_truncate, bad, 0));
    T("unlink bad", syscall(SYS_unlink, bad));
    T("mkdir bad", syscall(SYS_mkdir, bad, 0755));
    T("open bad", syscall(SYS_open, bad, O_RDONLY));
    T("openat bad", syscall(SYS_openat, AT_FDCWD, wild, O_RDONLY));
    T("open NULL", syscall(SYS_open, NULL, O_RDONLY));
    T("link NULL,x", syscall(SYS_link, NULL, "x"));
    T("link f,NULL", syscall(SYS_link, "f", NULL));
    T("rename NULL,x", syscall(SYS_rename, NULL, "x"));
    T("rename f,bad", syscall(SYS_rename, "f", bad));
    T("linkat NULL", syscall(SYS_linkat, AT_FDCWD, NULL, AT_FDCWD, "x", 0));
    T("symlink bad target", syscall(SYS_symlink, bad, "s"));
    T("chmod bad", syscall(SYS_chmod, bad, 0644));
    T("utimensat bad times", syscall(SYS_utimensat, AT_FDCWD, "f", bad, 0));
    T("getdents bad", syscall(SYS_getdents64, open(".", O_RDONLY | O_DIRECTORY), bad, 4096));
    T("getcwd bad", syscall(SYS_getcwd, bad, 4096));
    T("fcntl getlk bad", syscall(SYS_fcntl, fd, F_GETLK, bad));
    T("fgetxattr bad name", syscall(SYS_fgetxattr, fd, bad, m, 16));
    T("sigaction bad", syscall(SYS_rt_sigaction, SIGUSR1, bad, NULL, 8));
    T("sigprocmask bad", syscall(SYS_rt_sigprocmask, SIG_BLOCK, bad, NULL, 8));
    T("close", close(fd));
    /* The program's own faults stay the program's: its handler runs... */
    struct sigaction sa = { .sa_handler = on_segv }, old;
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGSEGV, NULL, &old);
    printf("handler reported back: %s\n", old.sa_handler == on_segv ? "yes" : "no");
    if (sigsetjmp(env, 1) == 0) {
        *(volatile char *)bad = 1;
        printf("not reached\n");
    } else {
        printf("caught own SIGSEGV\n");
    }
    T("read bad with a handler", read(open("f", O_RDONLY), bad, 8));
    /* ... and without one it dies of it. */
    signal(SIGSEGV, SIG_DFL);
    fflush(stdout);
    *(volatile char *)bad = 1;
    printf("not reached\n");
    return 0;
}
