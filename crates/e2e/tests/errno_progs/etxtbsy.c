/* ETXTBSY: a running program's file cannot be opened for writing or
 * truncated; a file open for writing cannot be executed; a #! script is
 * not write-protected while it runs, but cannot be executed while open
 * for writing either. The program copies itself into DIR and runs the
 * copies ("wait": say R, read stdin to its end; "fork": fork, the child
 * says R and waits, the parent exits at once).
 *
 * usage: etxtbsy DIR */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;

static const char *ename(int e)
{
	switch (e) {
	case 0: return "ok";
	case ETXTBSY: return "ETXTBSY";
	case EACCES: return "EACCES";
	case ENOENT: return "ENOENT";
	case EPERM: return "EPERM";
	case ENOEXEC: return "ENOEXEC";
	default: return strerror(e);
	}
}

static char *path(const char *name)
{
	static char buf[8][4096];
	static int k;
	char *p = buf[k++ % 8];
	snprintf(p, 4096, "%s/%s", dir, name);
	return p;
}

static void wait_stdin(void)
{
	char c;
	while (read(0, &c, 1) > 0)
		;
}

static int copy_self(const char *to)
{
	int in = open("/proc/self/exe", O_RDONLY);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	char buf[65536];
	ssize_t n;
	if (in < 0 || out < 0) {
		printf("copy to %s: %s\n", to, strerror(errno));
		exit(1);
	}
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(out, buf, n) != n) {
			perror("write");
			exit(1);
		}
	close(in);
	close(out);
	return 0;
}

struct child {
	pid_t pid;
	int in;  /* its stdin (write end) */
	int out; /* its stdout (read end) */
};

/* Run `prog arg`; wait until it says R (or tells why its exec failed). */
static struct child spawn(const char *prog, const char *arg, char *said, size_t cap)
{
	int i[2], o[2];
	struct child c;
	if (pipe2(i, O_CLOEXEC) || pipe2(o, O_CLOEXEC)) {
		perror("pipe");
		exit(1);
	}
	c.pid = fork();
	if (c.pid == 0) {
		dup2(i[0], 0);
		dup2(o[1], 1);
		execl(prog, prog, arg, (char *)NULL);
		dprintf(1, "exec: %s\n", ename(errno));
		_exit(127);
	}
	close(i[0]);
	close(o[1]);
	c.in = i[1];
	c.out = o[0];
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = read(c.out, said + n, 1);
		if (r <= 0)
			break;
		n++;
		if (said[n - 1] == '\n')
			break;
	}
	said[n] = 0;
	return c;
}

/* Let it go; wait for its end (EOF on its stdout: a grandchild too). */
static void finish(struct child *c)
{
	char buf[256];
	close(c->in);
	while (read(c->out, buf, sizeof buf) > 0)
		;
	close(c->out);
	waitpid(c->pid, NULL, 0);
}

static void try_open(const char *what, const char *p, int flags)
{
	int fd = open(p, flags, 0644);
	printf("  %-28s %s\n", what, ename(fd < 0 ? errno : 0));
	if (fd >= 0)
		close(fd);
}

static void try_truncate(const char *p)
{
	struct stat st;
	int r;
	if (stat(p, &st)) {
		printf("  stat: %s\n", ename(errno));
		return;
	}
	/* The same size: harmless if it (wrongly) succeeds. */
	r = truncate(p, st.st_size);
	printf("  %-28s %s\n", "truncate", ename(r ? errno : 0));
}

static void writes(const char *p)
{
	try_open("open O_WRONLY", p, O_WRONLY);
	try_open("open O_RDWR", p, O_RDWR);
	try_open("open O_RDONLY", p, O_RDONLY);
	try_open("open O_PATH|O_WRONLY", p, O_PATH | O_WRONLY);
	try_truncate(p);
}

/* Only after `writes` said ETXTBSY for it: O_TRUNC would truncate. */
static void truncs(const char *p)
{
	try_open("open O_RDONLY|O_TRUNC", p, O_RDONLY | O_TRUNC);
	try_open("creat", p, O_WRONLY | O_CREAT | O_TRUNC);
}

int main(int argc, char **argv)
{
	char said[256];
	struct child a, b;

	if (argc == 2 && strcmp(argv[1], "wait") == 0) {
		printf("R\n");
		fflush(stdout);
		wait_stdin();
		return 0;
	}
	if (argc == 2 && strcmp(argv[1], "fork") == 0) {
		pid_t p = fork();
		if (p == 0) {
			printf("R\n");
			fflush(stdout);
			wait_stdin();
			return 0;
		}
		return p < 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: etxtbsy DIR\n");
		return 2;
	}
	dir = argv[1];
	setvbuf(stdout, NULL, _IONBF, 0);

	printf("a running binary\n");
	copy_self(path("p1"));
	if (link(path("p1"), path("p1-link")))
		perror("link");
	a = spawn(path("p1"), "wait", said, sizeof said);
	printf(" first: %s", said);
	writes(path("p1"));
	truncs(path("p1"));
	printf(" another name of it\n");
	try_open("open O_WRONLY", path("p1-link"), O_WRONLY);
	b = spawn(path("p1"), "wait", said, sizeof said);
	printf(" second copy running: %s", said);
	finish(&b);
	printf(" second gone\n");
	try_open("open O_WRONLY", path("p1"), O_WRONLY);
	finish(&a);
	printf(" both gone\n");
	writes(path("p1"));

	printf("a forked child of a running binary, its parent gone\n");
	copy_self(path("p2"));
	a = spawn(path("p2"), "fork", said, sizeof said);
	printf(" child: %s", said);
	waitpid(a.pid, NULL, 0);
	writes(path("p2"));
	finish(&a);
	printf(" child gone\n");
	writes(path("p2"));

	printf("exec of a file open for writing\n");
	copy_self(path("p3"));
	int w = open(path("p3"), O_WRONLY | O_CLOEXEC);
	a = spawn(path("p3"), "wait", said, sizeof said);
	printf(" writer open: %s", said);
	finish(&a);
	int r = open(path("p3"), O_RDWR | O_CLOEXEC);
	close(w);
	a = spawn(path("p3"), "wait", said, sizeof said);
	printf(" read-write open: %s", said);
	finish(&a);
	close(r);
	a = spawn(path("p3"), "wait", said, sizeof said);
	printf(" writers closed: %s", said);
	finish(&a);

	printf("a running script\n");
	FILE *f = fopen(path("sc"), "w");
	fprintf(f, "#!/bin/sh\necho R\nwhile read x; do :; done\n");
	fclose(f);
	chmod(path("sc"), 0755);
	a = spawn(path("sc"), NULL, said, sizeof said);
	printf(" script: %s", said);
	try_open("open O_WRONLY", path("sc"), O_WRONLY);
	try_open("open O_RDWR", path("sc"), O_RDWR);
	try_truncate(path("sc"));
	finish(&a);
	w = open(path("sc"), O_WRONLY | O_CLOEXEC);
	a = spawn(path("sc"), NULL, said, sizeof said);
	printf(" script open for writing: %s", said);
	finish(&a);
	close(w);
	a = spawn(path("sc"), NULL, said, sizeof said);
	printf(" script closed: %s", said);
	finish(&a);
	return 0;
}
