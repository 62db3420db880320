/* /proc/self/fdinfo/N of a forwarded descriptor: the domain kernel's view,
   consistent with statx (mnt_id, ino) and with the position and flags.
   argv[1]: a file. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_RDWR | O_APPEND);
    lseek(fd, 3, SEEK_SET);
    char p[64], buf[512];
    snprintf(p, sizeof p, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(p, "r");
    struct statx sx;
    statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID | STATX_INO, &sx);
    if (!f) { perror("fopen"); return 1; }
    while (fgets(buf, sizeof buf, f)) {
        unsigned long long v;
        if (sscanf(buf, "mnt_id: %llu", &v) == 1) printf("mnt_id matches statx %d\n", v == sx.stx_mnt_id);
        else if (sscanf(buf, "ino: %llu", &v) == 1) printf("ino matches statx %d\n", v == sx.stx_ino);
        else fputs(buf, stdout);
    }
    return 0;
}
