#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <sys/resource.h>
int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : ".";
    char p[4096];
    snprintf(p, sizeof p, "%s/fdnum-a", dir);
    int a = open(p, O_CREAT | O_RDWR, 0644);
    printf("first open: %d\n", a);
    snprintf(p, sizeof p, "%s/fdnum-b", dir);
    int b = open(p, O_CREAT | O_RDWR, 0644);
    printf("second open: %d\n", b);
    close(a);
    int c = open(p, O_RDONLY);
    printf("reuse lowest: %d\n", c);
    int d = dup(b);
    printf("dup: %d\n", d);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    long lim = argc > 2 ? atol(argv[2]) : 64;
    rl.rlim_cur = lim;
    setrlimit(RLIMIT_NOFILE, &rl);
    int n = 0, last = -1, e = 0;
    for (;;) {
        int f = open(p, O_RDONLY);
        if (f < 0) { e = errno; break; }
        last = f; n++;
    }
    printf("opened %d more, last %d, then %s\n", n, last, strerror(e));
    errno = 0;
    int x = fcntl(b, F_DUPFD, 0);
    printf("F_DUPFD at limit: %d %s\n", x, x < 0 ? strerror(errno) : "");
    x = dup(0);
    printf("dup(0) at limit: %d %s\n", x, x < 0 ? strerror(errno) : "");
    int pp[2];
    x = pipe(pp);
    printf("pipe at limit: %d %s\n", x, x < 0 ? strerror(errno) : "");
    close(last);
    x = open(p, O_RDONLY);
    printf("after close: %d (last was %d)\n", x, last);
    x = fcntl(b, F_DUPFD, lim);
    printf("F_DUPFD >= limit: %d %s\n", x, x < 0 ? strerror(errno) : "");
    x = dup2(b, lim);
    printf("dup2 to limit: %d %s\n", x, x < 0 ? strerror(errno) : "");
    return 0;
}
