#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <sys/stat.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-36s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-36s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
static char *rep(char c, int n) { char *s = malloc(n + 1); memset(s, c, n); s[n] = 0; return s; }
int main(int argc, char **argv) {
    if (chdir(argc > 1 ? argv[1] : ".")) return 1;
    /* a long working directory: its length plus the relative names below
       reaches PATH_MAX, which only the kernel's own limit may refuse */
    char *top = rep('n', 200);
    mkdir(top, 0755);
    if (chdir(top)) return 1;
    /* NAME_MAX edges */
    char *c255 = rep('a', 255), *c256 = rep('b', 256);
    T("create 255-byte name", open(c255, O_CREAT | O_WRONLY, 0644));
    T("create 256-byte name", open(c256, O_CREAT | O_WRONLY, 0644));
    T("mkdir 256-byte name", mkdir(c256, 0755));
    T("stat 256-byte name", access(c256, F_OK));
    T("unlink 255-byte name", unlink(c255));
    /* a deep relative name: 15 dirs of 255 + '/' and a file, 4077 bytes */
    char path[8192] = "";
    for (int i = 0; i < 15; i++) {
        char *d = rep('c' + (i % 20), 255);
        if (i) strcat(path, "/");
        strcat(path, d);
        if (mkdir(path, 0755)) { printf("mkdir level %d: %s\n", i, strerrorname_np(errno)); }
        free(d);
    }
    size_t base = strlen(path);
    strcat(path, "/");
    size_t want = 4077 - strlen(path);
    char *f = rep('z', want);
    strcat(path, f);
    printf("relative path length %zu\n", strlen(path));
    T("create 4077-byte relative path", open(path, O_CREAT | O_WRONLY, 0644));
    T("stat it", access(path, F_OK));
    /* a 4095-byte relative path (PATH_MAX-1): fits, names nothing */
    char p2[8192]; size_t b14 = 14 * 256 - 1; memcpy(p2, path, b14); p2[b14] = 0;
    strcat(p2, "/"); strcat(p2, rep('y', 255));
    size_t l = strlen(p2); strcat(p2, "/"); strcat(p2, rep('w', 4095 - l - 1));
    printf("length %zu\n", strlen(p2));
    T("open 4095-byte relative path", open(p2, O_RDONLY));
    strcat(p2, "w");
    printf("length %zu\n", strlen(p2));
    T("open 4096-byte relative path", open(p2, O_RDONLY));
    T("mkdir 4096-byte relative path", mkdir(p2, 0755));
    /* absolute: cwd + relative >= PATH_MAX */
    char cwd[PATH_MAX];
    T("getcwd", getcwd(cwd, sizeof cwd) ? 0 : -1);
    /* walk into the deep dir and use .. */
    T("chdir deep", chdir(path[0] ? strndup(path, base) : "."));
    char deep[8192];
    errno = 0;
    T("getcwd deep (>= PATH_MAX?)", getcwd(deep, sizeof deep) ? (long)strlen(deep) >= 0 : -1);
    T("open file in deep cwd", open(f, O_RDONLY));
    T("stat .. from deep cwd", access("..", F_OK));
    T("chdir ../..", chdir("../.."));
    return 0;
}
