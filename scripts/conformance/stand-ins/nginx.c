/*
 * nginx stand-in for critest's web server images: a master process named nginx (its pid in
 * /var/run/nginx.pid, "nginx: master process" in its command line, as critest's PID-namespace
 * specs look for) that runs busybox httpd on $NGINX_PORT (default 80) as its worker and passes
 * TERM/INT/QUIT on to it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MASTER_TITLE "nginx: master process nginx -g daemon off;"
#define PID_FILE "/var/run/nginx.pid"
#define SELF "/usr/sbin/nginx"

static volatile pid_t worker = -1;

static void forward(int sig) {
  if (worker > 0) kill(worker, sig);
}

int main(int argc, char **argv) {
  if (argc < 1 || strcmp(argv[0], MASTER_TITLE) != 0) {
    /* Run again under the master's title; exec'ing the file by its path keeps the process name "nginx". */
    char *title[] = {MASTER_TITLE, NULL};
    execv(SELF, title);
    perror("nginx: re-exec");
    return 1;
  }
  const char *port = getenv("NGINX_PORT");
  if (port == NULL || *port == '\0') port = "80";

  FILE *pid_file = fopen(PID_FILE, "w");
  if (pid_file != NULL) {
    fprintf(pid_file, "%d\n", (int)getpid());
    fclose(pid_file);
  }

  struct sigaction act = {0};
  act.sa_handler = forward;
  sigaction(SIGTERM, &act, NULL);
  sigaction(SIGINT, &act, NULL);
  sigaction(SIGQUIT, &act, NULL);

  pid_t child = fork();
  if (child < 0) {
    perror("nginx: fork");
    return 1;
  }
  if (child == 0) {
    execl("/bin/busybox", "httpd", "-f", "-p", port, "-h", "/usr/share/nginx/html", (char *)NULL);
    perror("nginx: exec httpd");
    _exit(127);
  }
  worker = child;
  fprintf(stderr, "nginx stand-in: worker %d serving /usr/share/nginx/html on port %s\n", (int)child, port);

  int status = 0;
  for (;;) {
    pid_t done = wait(&status);
    if (done == child) break;
    if (done < 0 && errno != EINTR) break;
  }
  unlink(PID_FILE);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 0;
}
