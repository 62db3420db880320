/* Test helper for the interception tests: each mode exercises one piece of
 * signal / process behaviour and prints a deterministic result, so a run
 * under LD_PRELOAD=libvirtuos.so can be compared with a native run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t hits;
static int pipefd[2];
static sigjmp_buf jb;

static void on_alarm(int sig) { (void)sig; hits++; }
static void on_alarm_write(int sig) {
    (void)sig;
    hits++;
    if (write(pipefd[1], "x", 1) != 1) _exit(3);
}
static void on_alarm_jump(int sig) { (void)sig; hits++; siglongjmp(jb, 1); }

static void arm_timer_ms(int ms) {
    struct itimerval it = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static void install(int sig, void (*h)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0) { perror("sigaction"); exit(2); }
}

/* A blocking read interrupted by a handler without SA_RESTART: EINTR. */
static int mode_eintr(int raw) {
    char c;
    if (pipe(pipefd)) return 2;
    install(SIGALRM, on_alarm, 0);
    arm_timer_ms(100);
    long r = raw ? syscall(SYS_read, pipefd[0], &c, 1) : read(pipefd[0], &c, 1);
    printf("eintr raw=%d r=%ld errno=%s hits=%d\n", raw, r, r < 0 && errno == EINTR ? "EINTR" : "other", (int)hits);
    return 0;
}

/* With SA_RESTART the read resumes and gets the byte the handler wrote. */
static int mode_restart(int raw) {
    char c = 0;
    if (pipe(pipefd)) return 2;
    install(SIGALRM, on_alarm_write, SA_RESTART);
    arm_timer_ms(100);
    long r = raw ? syscall(SYS_read, pipefd[0], &c, 1) : read(pipefd[0], &c, 1);
    printf("restart raw=%d r=%ld c=%c hits=%d\n", raw, r, c ? c : '?', (int)hits);
    return 0;
}

/* The handler leaves a blocking read with siglongjmp; afterwards system
 * calls (and a second interruption) must still work. */
static int mode_longjmp(void) {
    char c;
    if (pipe(pipefd)) return 2;
    install(SIGALRM, on_alarm_jump, 0);
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(jb, 1) == 0) {
            arm_timer_ms(50);
            syscall(SYS_read, pipefd[0], &c, 1);
            printf("not interrupted\n");
        }
    }
    printf("longjmp hits=%d pid_ok=%d\n", (int)hits, getpid() == (pid_t)syscall(SYS_getpid));
    return 0;
}

/* Block everything, then keep making system calls, threads and children. */
static void *thread_body(void *arg) { (void)arg; return (void *)(long)syscall(SYS_getppid); }
static int mode_blockall(void) {
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    int fd = open("/proc/self/stat", O_RDONLY);
    char buf[64];
    long n = read(fd, buf, sizeof buf);
    close(fd);
    pthread_t t;
    void *ret;
    pthread_create(&t, NULL, thread_body, NULL);
    pthread_join(t, &ret);
    pid_t p = fork();
    if (p == 0) _exit(syscall(SYS_getppid) == getppid() ? 7 : 8);
    int st;
    waitpid(p, &st, 0);
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    printf("blockall read=%d thread=%d child=%d\n", n > 0, ret == (void *)(long)getppid(), WEXITSTATUS(st));
    return 0;
}

static void on_trap(int sig) { (void)sig; hits++; }
/* The program may not take SIGSYS; its SIGTRAP handler still works. */
static int mode_sigsys(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    int r = sigaction(SIGSYS, &sa, &old);
    int r2 = signal(SIGSYS, SIG_IGN) == SIG_ERR;
    install(SIGTRAP, on_trap, 0);
    raise(SIGTRAP);
    printf("sigsys r=%d r2=%d trap_hits=%d pid_ok=%d\n", r, r2, (int)hits, getpid() > 0);
    return 0;
}

static void on_usr1(int sig) { (void)sig; hits++; }
/* sigsuspend and sigwait with the reserved signals in their sets. */
static int mode_sigwait(void) {
    sigset_t block, waitset, empty;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigprocmask(SIG_BLOCK, &block, NULL);
    install(SIGUSR1, on_usr1, 0);
    kill(getpid(), SIGUSR1);
    sigfillset(&empty);
    sigdelset(&empty, SIGUSR1);
    sigsuspend(&empty); /* returns after the handler ran */
    kill(getpid(), SIGUSR2);
    sigfillset(&waitset);
    int got = 0;
    sigemptyset(&waitset);
    sigaddset(&waitset, SIGUSR2);
    sigaddset(&waitset, SIGTRAP);
    sigwait(&waitset, &got);
    printf("sigwait hits=%d got=%s\n", (int)hits, got == SIGUSR2 ? "USR2" : "other");
    return 0;
}

/* Syscalls from the main thread, a second thread and a forked child, each
 * printing its ids so the test can find them in the trace. */
static void *ids_thread(void *arg) {
    (void)arg;
    printf("ids thread pid=%ld tid=%ld\n", (long)getpid(), (long)syscall(SYS_gettid));
    fflush(stdout);
    syscall(SYS_getppid);
    return NULL;
}
static int mode_ids(void) {
    printf("ids main pid=%ld tid=%ld\n", (long)getpid(), (long)syscall(SYS_gettid));
    fflush(stdout);
    syscall(SYS_getppid);
    pthread_t t;
    pthread_create(&t, NULL, ids_thread, NULL);
    pthread_join(t, NULL);
    pid_t p = fork();
    if (p == 0) {
        printf("ids child pid=%ld tid=%ld\n", (long)getpid(), (long)syscall(SYS_gettid));
        fflush(stdout);
        syscall(SYS_getppid);
        _exit(0);
    }
    waitpid(p, NULL, 0);
    p = vfork();
    if (p == 0) {
        syscall(SYS_getppid);
        _exit(0);
    }
    waitpid(p, NULL, 0);
    printf("ids done\n");
    return 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}
/* Per-call cost of getppid via syscall(), read(-1) via the libc wrapper. */
static int mode_bench(int n) {
    char c;
    double t0 = now();
    for (int i = 0; i < n; i++) syscall(SYS_getppid);
    double t1 = now();
    for (int i = 0; i < n; i++) if (read(-1, &c, 0) != -1) return 2;
    double t2 = now();
    for (int i = 0; i < n; i++) syscall(SYS_read, -1, &c, 0);
    double t3 = now();
    int pfd[2];
    if (pipe2(pfd, O_NONBLOCK)) return 2;
    for (int i = 0; i < n; i++) syscall(SYS_read, pfd[0], &c, 1);
    double t4 = now();
    for (int i = 0; i < n; i++) if (read(pfd[0], &c, 1) != -1) return 2;
    double t5 = now();
    printf("bench getppid_ns=%.0f read_wrapper_ns=%.0f read_syscall_ns=%.0f pipe_syscall_ns=%.0f pipe_wrapper_ns=%.0f\n",
           (t1 - t0) / n * 1e9, (t2 - t1) / n * 1e9, (t3 - t2) / n * 1e9, (t4 - t3) / n * 1e9, (t5 - t4) / n * 1e9);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *m = argc > 1 ? argv[1] : "";
    if (!strcmp(m, "eintr")) return mode_eintr(0);
    if (!strcmp(m, "eintr-raw")) return mode_eintr(1);
    if (!strcmp(m, "restart")) return mode_restart(0);
    if (!strcmp(m, "restart-raw")) return mode_restart(1);
    if (!strcmp(m, "longjmp")) return mode_longjmp();
    if (!strcmp(m, "blockall")) return mode_blockall();
    if (!strcmp(m, "sigsys")) return mode_sigsys();
    if (!strcmp(m, "sigwait")) return mode_sigwait();
    if (!strcmp(m, "ids")) return mode_ids();
    if (!strcmp(m, "bench")) return mode_bench(argc > 2 ? atoi(argv[2]) : 100000);
    fprintf(stderr, "unknown mode %s\n", m);
    return 1;
}
