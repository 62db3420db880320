#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-30s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-30s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
int main(int argc, char **argv) {
    if (chdir(argc > 1 ? argv[1] : ".")) return 1;
    unlink("lk");
    int fd = open("lk", O_CREAT | O_RDWR, 0644);
    T("write", write(fd, "0123456789", 10));
    /* a lock description in read-only memory */
    struct flock *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(ro, 0, sizeof *ro);
    ro->l_type = F_WRLCK; ro->l_whence = SEEK_SET; ro->l_start = 0; ro->l_len = 5;
    mprotect(ro, 4096, PROT_READ);
    T("F_SETLK read-only flock", fcntl(fd, F_SETLK, ro));
    T("F_SETLKW read-only flock", fcntl(fd, F_SETLKW, ro));
    T("F_GETLK read-only flock", fcntl(fd, F_GETLK, ro));
    T("F_SETLK bad ptr", fcntl(fd, F_SETLK, (void *)1));
    fflush(stdout);
    pid_t me = getpid();
    pid_t c = fork();
    if (c == 0) {
        int f = open("lk", O_RDWR);
        struct flock q = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        T("child F_GETLK", fcntl(f, F_GETLK, &q));
        printf("child sees type %s, holder is parent: %s, start %ld len %ld\n",
               q.l_type == F_WRLCK ? "WRLCK" : q.l_type == F_UNLCK ? "UNLCK" : "?",
               q.l_pid == me ? "yes" : "no", (long)q.l_start, (long)q.l_len);
        struct flock q2 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 6, .l_len = 2 };
        T("child F_GETLK free range", fcntl(f, F_GETLK, &q2));
        printf("free range type %s pid %d\n", q2.l_type == F_UNLCK ? "UNLCK" : "?", (int)q2.l_pid);
        struct flock q3 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
        T("child F_SETLK conflict", fcntl(f, F_SETLK, &q3));
        fflush(stdout);
        _exit(0);
    }
    int st; waitpid(c, &st, 0);
    /* OFD locks report pid -1 */
    int o = open("lk", O_RDWR);
    struct flock ofd = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 8, .l_len = 1 };
    T("F_OFD_SETLK", fcntl(o, F_OFD_SETLK, &ofd));
    int o2 = open("lk", O_RDWR);
    struct flock oq = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 8, .l_len = 1 };
    T("F_OFD_GETLK", fcntl(o2, F_OFD_GETLK, &oq));
    printf("ofd holder type %s pid %d\n", oq.l_type == F_RDLCK ? "RDLCK" : "?", (int)oq.l_pid);
    T("F_GETSIG default", fcntl(fd, F_GETSIG));
    T("F_SETSIG SIGUSR1", fcntl(fd, F_SETSIG, SIGUSR1));
    T("F_GETSIG", fcntl(fd, F_GETSIG));
    T("F_SETSIG 0", fcntl(fd, F_SETSIG, 0));
    T("F_GETSIG after 0", fcntl(fd, F_GETSIG));
    T("F_SETSIG 100", fcntl(fd, F_SETSIG, 100));
    T("F_GETLK64 (12)", fcntl(fd, 12, ro));
    return 0;
}
