#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-36s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-36s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
int main(int argc, char **argv) {
    const char *root = argv[1], *tmp = argv[2];
    char p[4096], q[4096];
    if (chdir(root)) return 1;
    mkdir("dir", 0755);
    close(open("dir/name", O_CREAT | O_WRONLY, 0644));
    close(open("file", O_CREAT | O_WRONLY, 0644));
    snprintf(q, sizeof q, "%s/hostfile", tmp);
    close(open(q, O_CREAT | O_WRONLY, 0644));
    int d = open("dir", O_RDONLY | O_DIRECTORY);
    snprintf(p, sizeof p, "/proc/self/fd/%d/name", d);
    T("stat /proc/self/fd/N/name", access(p, F_OK));
    int f = open(p, O_RDONLY);
    T("open /proc/self/fd/N/name", f);
    snprintf(p, sizeof p, "/dev/fd/%d/missing", d);
    T("stat /dev/fd/N/missing", access(p, F_OK));
    int hf = open(q, O_RDONLY);
    T("linkat bad olddirfd", linkat(99, "x", AT_FDCWD, "newname", 0));
    T("linkat file as olddirfd", linkat(hf, "x", AT_FDCWD, "newname", 0));
    T("linkat missing host source", linkat(AT_FDCWD, "/nonexistent-virtuos", AT_FDCWD, "newname", 0));
    T("renameat bad newdirfd", renameat(AT_FDCWD, "file", 99, "x"));
    T("rename missing source to host", rename("missing", q));
    int op = open("file", O_PATH);
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN };
    T("epoll_ctl O_PATH", epoll_ctl(ep, EPOLL_CTL_ADD, op, &ev));
    T("epoll_ctl regular file", epoll_ctl(ep, EPOLL_CTL_ADD, f, &ev));
    T("sendfile out -1", syscall(SYS_sendfile, -1, f, NULL, 4));
    T("sendfile out O_RDONLY", syscall(SYS_sendfile, hf, f, NULL, 4));
    return 0;
}
