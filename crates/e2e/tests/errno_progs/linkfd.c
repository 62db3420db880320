/* Linking a descriptor's file into a name: O_TMPFILE then linkat through
   /proc/self/fd/N (AT_SYMLINK_FOLLOW) or with AT_EMPTY_PATH, as systemd,
   editors and install(1) do. argv[1]: a directory. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-40s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-40s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
static void content(const char *name) {
    char buf[64] = {0};
    int fd = open(name, O_RDONLY);
    if (fd < 0) { printf("%-40s -1 %s\n", name, strerrorname_np(errno)); return; }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    struct stat st;
    fstat(fd, &st);
    printf("%-40s %zd '%s' mode %o nlink %ld\n", name, n, buf, st.st_mode & 07777, (long)st.st_nlink);
    close(fd);
}
int main(int argc, char **argv) {
    char p[4096], q[4096];
    if (chdir(argv[1])) return 1;
    umask(022);
    int t = open(".", O_TMPFILE | O_RDWR, 0640);
    T("open O_TMPFILE", t >= 0 ? 0 : -1);
    T("write", write(t, "hello", 5));
    snprintf(p, sizeof p, "/proc/self/fd/%d", t);
    snprintf(q, sizeof q, "%s/linked", argv[1]);
    T("linkat /proc/self/fd/N nofollow", linkat(AT_FDCWD, p, AT_FDCWD, q, 0));
    T("linkat /proc/self/fd/N follow", linkat(AT_FDCWD, p, AT_FDCWD, q, AT_SYMLINK_FOLLOW));
    content("linked");
    T("linkat again: EEXIST", linkat(AT_FDCWD, p, AT_FDCWD, q, AT_SYMLINK_FOLLOW));
    T("linkat relative name", linkat(AT_FDCWD, p, AT_FDCWD, "rel", AT_SYMLINK_FOLLOW));
    content("rel");
    int d = open(".", O_RDONLY | O_DIRECTORY);
    T("linkat dirfd name", linkat(AT_FDCWD, p, d, "viadir", AT_SYMLINK_FOLLOW));
    content("viadir");
    snprintf(q, sizeof q, "/dev/fd/%d", t);
    T("linkat /dev/fd/N follow", linkat(AT_FDCWD, q, AT_FDCWD, "devfd", AT_SYMLINK_FOLLOW));
    close(t);
    /* AT_EMPTY_PATH: needs CAP_DAC_READ_SEARCH (ENOENT without). */
    int t2 = open(".", O_TMPFILE | O_WRONLY, 0600);
    T("write t2", write(t2, "two", 3));
    T("linkat AT_EMPTY_PATH", linkat(t2, "", AT_FDCWD, "empty", AT_EMPTY_PATH));
    content("empty");
    T("linkat AT_EMPTY_PATH name", linkat(t2, "", AT_FDCWD, "empty2", AT_EMPTY_PATH));
    /* O_EXCL: the file may never be linked. */
    int t3 = open(".", O_TMPFILE | O_WRONLY | O_EXCL, 0600);
    snprintf(p, sizeof p, "/proc/self/fd/%d", t3);
    T("linkat O_TMPFILE|O_EXCL", linkat(AT_FDCWD, p, AT_FDCWD, "excl", AT_SYMLINK_FOLLOW));
    T("linkat O_TMPFILE|O_EXCL EMPTY", linkat(t3, "", AT_FDCWD, "excl", AT_EMPTY_PATH));
    /* An ordinary file, unlinked: ENOENT; still named: a second link. */
    int f = open("plain", O_CREAT | O_RDWR, 0644);
    snprintf(p, sizeof p, "/proc/self/fd/%d", f);
    T("linkat named file", linkat(AT_FDCWD, p, AT_FDCWD, "plain2", AT_SYMLINK_FOLLOW));
    content("plain2");
    unlink("plain"); unlink("plain2");
    T("linkat unlinked file", linkat(AT_FDCWD, p, AT_FDCWD, "plain3", AT_SYMLINK_FOLLOW));
    /* A directory descriptor: EPERM. */
    snprintf(p, sizeof p, "/proc/self/fd/%d", d);
    T("linkat directory", linkat(AT_FDCWD, p, AT_FDCWD, "dirlink", AT_SYMLINK_FOLLOW));
    T("linkat directory EMPTY", linkat(d, "", AT_FDCWD, "dirlink", AT_EMPTY_PATH));
    /* As a non-root user (no CAP_DAC_READ_SEARCH) when run as root. */
    if (getuid() == 0 && argc > 2) {
        int t4 = open(".", O_TMPFILE | O_WRONLY, 0644);
        fchown(t4, 65534, 65534);
        chmod(".", 0777);
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) return 2;
        snprintf(p, sizeof p, "/proc/self/fd/%d", t4);
        T("nobody linkat EMPTY", linkat(t4, "", AT_FDCWD, "nobody1", AT_EMPTY_PATH));
        T("nobody linkat follow", linkat(AT_FDCWD, p, AT_FDCWD, "nobody2", AT_SYMLINK_FOLLOW));
        content("nobody2");
    }
    return 0;
}
