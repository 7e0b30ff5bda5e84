/*
 * The pod sandbox's process (tests/k8s/images/build pause): it holds the pod's namespaces open
 * and does nothing else. Like Kubernetes' own pause it sleeps until SIGINT or SIGTERM, then
 * exits 0, and reaps the children it inherits as PID 1 of a shared PID namespace. Built static
 * (glibc's libc.a), so the image is this one file and nothing else.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal)
{
    (void)signal;
    _exit(0);
}

static void reap(int signal)
{
    (void)signal;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("trustmount test pause");
        return 0;
    }
    if (getpid() != 1) {
        /* Not fatal: a test may run it outside a container. */
        fputs("pause: warning: not PID 1\n", stderr);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = stop;
    if (sigaction(SIGINT, &action, NULL) < 0 || sigaction(SIGTERM, &action, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    action.sa_handler = reap;
    action.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &action, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
