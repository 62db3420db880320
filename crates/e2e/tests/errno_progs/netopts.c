/* Socket options servers set, and interface ioctls that work on any
   socket (the network domain's interfaces under virtuos: lo is the same). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static void show(const char *what, long r) {
    if (r < 0) printf("%-34s -1 %s\n", what, strerrorname_np(errno));
    else printf("%-34s %ld\n", what, r);
    errno = 0;
}
#define T(what, call) show(what, (long)(call))
static int one = 1;
#define SET(s, level, name) T(#level " " #name, setsockopt(s, level, name, &one, sizeof one))
static void get(int s, int level, int name, const char *what) {
    int v = -1;
    socklen_t len = sizeof v;
    int r = getsockopt(s, level, name, &v, &len);
    if (r < 0) show(what, r);
    else printf("%-34s = %d (len %u)\n", what, v, len);
}
static void ifreq_tests(int s, const char *who) {
    struct ifreq ifr;
    printf("-- %s\n", who);
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    T("SIOCGIFINDEX lo", ioctl(s, SIOCGIFINDEX, &ifr));
    printf("  index %d\n", ifr.ifr_ifindex);
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_ifindex = 1;
    T("SIOCGIFNAME 1", ioctl(s, SIOCGIFNAME, &ifr));
    printf("  name %s\n", ifr.ifr_name);
    strcpy(ifr.ifr_name, "lo");
    T("SIOCGIFMTU lo", ioctl(s, SIOCGIFMTU, &ifr));
    int mtu = ifr.ifr_mtu;
    printf("  mtu %d\n", mtu);
    T("SIOCGIFFLAGS lo", ioctl(s, SIOCGIFFLAGS, &ifr));
    printf("  up %d loopback %d\n", !!(ifr.ifr_flags & IFF_UP), !!(ifr.ifr_flags & IFF_LOOPBACK));
    T("SIOCGIFADDR lo", ioctl(s, SIOCGIFADDR, &ifr));
    printf("  addr %s\n", inet_ntoa(((struct sockaddr_in *)&ifr.ifr_addr)->sin_addr));
    strcpy(ifr.ifr_name, "virtuosnone0");
    T("SIOCGIFMTU missing", ioctl(s, SIOCGIFMTU, &ifr));
    /* Setting lo's MTU to what it is changes nothing (root), or is EPERM. */
    strcpy(ifr.ifr_name, "lo");
    ifr.ifr_mtu = mtu;
    T("SIOCSIFMTU lo (same)", ioctl(s, SIOCSIFMTU, &ifr));
    int n = -1;
    T("SIOCOUTQ", ioctl(s, TIOCOUTQ, &n));
    printf("  outq %d\n", n);
}
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    SET(s, SOL_SOCKET, SO_REUSEADDR);
    SET(s, SOL_SOCKET, SO_REUSEPORT);
    SET(s, SOL_SOCKET, SO_KEEPALIVE);
    SET(s, SOL_SOCKET, SO_BROADCAST);
    SET(s, IPPROTO_TCP, TCP_NODELAY);
    SET(s, IPPROTO_TCP, TCP_CORK);
    SET(s, IPPROTO_TCP, TCP_KEEPIDLE);
    SET(s, IPPROTO_TCP, TCP_KEEPINTVL);
    SET(s, IPPROTO_TCP, TCP_KEEPCNT);
    SET(s, IPPROTO_TCP, TCP_DEFER_ACCEPT);
    SET(s, IPPROTO_TCP, TCP_FASTOPEN);
    int ms = 5000;
    T("TCP_USER_TIMEOUT", setsockopt(s, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms));
    struct linger lg = { 1, 3 };
    T("SO_LINGER", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
    struct timeval tv = { 2, 0 };
    T("SO_RCVTIMEO", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
    int tos = 0x10;
    T("IP_TOS", setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof tos));
    int ttl = 33;
    T("IP_TTL", setsockopt(s, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl));
    T("SO_BINDTODEVICE lo", setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3));
    T("TCP_CONGESTION reno", setsockopt(s, IPPROTO_TCP, TCP_CONGESTION, "reno", 4));
    get(s, SOL_SOCKET, SO_REUSEADDR, "get SO_REUSEADDR");
    get(s, IPPROTO_TCP, TCP_NODELAY, "get TCP_NODELAY");
    get(s, IPPROTO_TCP, TCP_USER_TIMEOUT, "get TCP_USER_TIMEOUT");
    get(s, IPPROTO_IP, IP_TOS, "get IP_TOS");
    get(s, IPPROTO_IP, IP_TTL, "get IP_TTL");
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct ip_mreq mr = { .imr_multiaddr.s_addr = inet_addr("239.1.2.3"), .imr_interface.s_addr = htonl(INADDR_LOOPBACK) };
    T("IP_ADD_MEMBERSHIP", setsockopt(u, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr));
    unsigned char loop = 0;
    T("IP_MULTICAST_LOOP", setsockopt(u, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop));
    T("IP_DROP_MEMBERSHIP", setsockopt(u, IPPROTO_IP, IP_DROP_MEMBERSHIP, &mr, sizeof mr));
    int s6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (s6 >= 0) SET(s6, IPPROTO_IPV6, IPV6_V6ONLY);
    ifreq_tests(u, "root");
    if (getuid() == 0) {
        if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)) return 2;
        ifreq_tests(u, "nobody");
    }
    return 0;
}
