#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/syscall.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-30s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-30s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
int main(void) {
    char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(m + 4096, 4096, PROT_NONE);
    char *bad = m + 4096;
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    T("bind bad addr", syscall(SYS_bind, s, bad, sizeof a));
    T("bind", bind(s, (void *)&a, sizeof a));
    socklen_t len = sizeof a;
    T("getsockname bad addr", syscall(SYS_getsockname, s, bad, &len));
    T("getsockname bad len", syscall(SYS_getsockname, s, &a, bad));
    T("getsockname", getsockname(s, (void *)&a, &len));
    T("connect bad addr", syscall(SYS_connect, s, bad, sizeof a));
    T("connect", connect(s, (void *)&a, sizeof a));
    T("send bad buf", syscall(SYS_sendto, s, bad, 8, 0, NULL, 0));
    T("sendto bad addr", syscall(SYS_sendto, s, "hello", 5, 0, bad, sizeof a));
    T("send", send(s, "hello", 5, 0));
    T("recv bad buf", syscall(SYS_recvfrom, s, bad, 8, MSG_DONTWAIT, NULL, NULL));
    T("send", send(s, "hello", 5, 0));
    T("recvfrom bad addrlen", syscall(SYS_recvfrom, s, m, 8, MSG_DONTWAIT, &a, bad));
    T("getsockopt bad val", syscall(SYS_getsockopt, s, SOL_SOCKET, SO_TYPE, bad, &len));
    T("setsockopt bad val", syscall(SYS_setsockopt, s, SOL_SOCKET, SO_RCVBUF, bad, 4));
    T("write bad", write(s, bad, 4));
    T("ftruncate socket", ftruncate(s, 0));
    T("fsync socket", fsync(s));
    T("lseek socket", lseek(s, 0, SEEK_SET));
    T("getdents socket", syscall(SYS_getdents64, s, m, 4096));
    T("sendfile to -1", syscall(SYS_sendfile, -1, s, NULL, 4));
    return 0;
}
