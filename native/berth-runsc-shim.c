/*
 * berth-runsc-shim: conmon's runtime for a container that joins a gVisor
 * (runsc) pod sandbox.
 *
 * Two things keep conmon from driving such a container through runsc alone:
 * runsc writes the sandbox's pid to --pid-file (not conmon's child, and not
 * the container's lifetime), and runsc hands the container the stdio of
 * `runsc start`, not of `runsc create` (so a start run by berth would give
 * the container berth's pipes instead of conmon's). This program stays
 * behind as the "container process" conmon watches:
 *
 *   berth-runsc-shim <control-dir> <runsc> [global flags...] create ... --pid-file P ... ID
 *     Makes the fifos <control-dir>/start and <control-dir>/started, runs
 *     `<runsc> [flags] create ...`, then forks the monitor and writes its
 *     pid to P. The monitor keeps conmon's stdio. When berth writes to
 *     `start`, it runs `<runsc> [flags] start ID` with that stdio, writes
 *     runsc's exit code and a newline to `started`, lets go of the stdio, and
 *     then waits through `<runsc> [flags] wait ID` for the container to end.
 *     It exits with the status runsc reports (128+signal for a signal), or
 *     255 when the container never started or runsc could not say; conmon,
 *     its subreaper, records that as the container's exit.
 *
 *   berth-runsc-shim <control-dir> <runsc> [global flags...] <other verb> ...
 *     Runs runsc as given.
 *
 * The `start` fifo exists until berth asks for the start: until then a signal
 * for the container is a signal for the monitor (berth sends it), and a
 * monitor whose container is removed (the fifo is gone, or conmon is) exits
 * on its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NEVER_STARTED 255

static char start_fifo[4096];
static char started_fifo[4096];

static int wait_child(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

/* Runs argv with this process's stdio; its exit status, or -1. */
static int run(char **argv) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execv(argv[0], argv);
    fprintf(stderr, "berth-runsc-shim: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return wait_child(pid);
}

/* One `runsc ... wait ID`, its stdout and stderr into buf; its exit status, or -1. */
static int runsc_wait_once(char **argv, char *buf, size_t size) {
  int out[2];
  if (pipe(out) < 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(out[1], 2);
    close(out[0]);
    close(out[1]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(out[1]);
  size_t len = 0;
  ssize_t n;
  while (len < size - 1 && ((n = read(out[0], buf + len, size - 1 - len)) > 0 || (n < 0 && errno == EINTR)))
    if (n > 0) len += (size_t)n;
  buf[len] = '\0';
  close(out[0]);
  return wait_child(pid);
}

/*
 * Blocks until berth asks for the start; 0 then, -1 when the container went
 * away first. `fd` is the request fifo's read end, open since before the pid
 * file was written.
 */
static int await_start_request(int fd, pid_t monitor_parent) {
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, 1000);
    if (ready > 0 && (p.revents & POLLIN)) {
      char byte;
      ssize_t n = read(fd, &byte, 1);
      if (n == 1) {
        close(fd);
        return 0;
      }
    }
    struct stat st;
    /* Removed container (berth deletes the control dir) or a dead conmon: nothing to start. */
    if (stat(start_fifo, &st) < 0 || getppid() != monitor_parent) {
      close(fd);
      return -1;
    }
    if (ready > 0 && (p.revents & POLLHUP)) {
      /* A writer came and went without a byte: reopen so poll blocks again. */
      close(fd);
      fd = open(start_fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      if (fd < 0) return -1;
    }
  }
}

static void report_started(int rc) {
  int fd = open(started_fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return; /* berth stopped listening: it asks runsc for the state instead */
  char text[16];
  int len = snprintf(text, sizeof(text), "%d\n", rc);
  if (write(fd, text, (size_t)len) < 0) {
    /* nothing more to tell */
  }
  close(fd);
}

static void monitor(pid_t shim, int start_fd, char **runsc, int nglobal, const char *id) {
  /* Reparented to conmon (a subreaper) once the shim exits: remember that parent. */
  while (getppid() == shim) usleep(1000);
  pid_t conmon = getppid();

  char **argv = calloc((size_t)nglobal + 3, sizeof(char *));
  if (!argv) _exit(NEVER_STARTED);
  for (int i = 0; i < nglobal; i++) argv[i] = runsc[i];
  argv[nglobal + 1] = (char *)id;

  if (await_start_request(start_fd, conmon) < 0) _exit(NEVER_STARTED);
  /* Gone fifo = start asked for: from now on berth signals the container, not this monitor. */
  unlink(start_fifo);
  argv[nglobal] = "start";
  int rc = run(argv);
  /* From here on only the sandbox holds the container's stdio: conmon sees its end. */
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
  }
  report_started(rc);
  if (rc != 0) _exit(NEVER_STARTED);

  argv[nglobal] = "wait";
  static char buf[8192];
  useconds_t backoff = 10000;
  for (;;) {
    int wrc = runsc_wait_once(argv, buf, sizeof(buf));
    const char *field = strstr(buf, "\"exitStatus\":");
    if (wrc == 0 && field) {
      const char *digits = field + strlen("\"exitStatus\":");
      char *end;
      long code = strtol(digits, &end, 10);
      _exit(end == digits || code < 0 || code > 255 ? 255 : (int)code);
    }
    /* runsc may not see the start yet: ask again, soon at first. */
    if (wrc < 0 || !strstr(buf, "not started")) _exit(255);
    usleep(backoff);
    if (backoff < 1000000) backoff *= 2;
  }
}

static int write_pid_file(const char *path, pid_t pid) {
  char temp[4200];
  if (snprintf(temp, sizeof(temp), "%s.shim-tmp", path) >= (int)sizeof(temp)) return -1;
  int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  char text[32];
  int len = snprintf(text, sizeof(text), "%d", (int)pid);
  if (write(fd, text, (size_t)len) != len || close(fd) < 0 || rename(temp, path) < 0) {
    unlink(temp);
    return -1;
  }
  return 0;
}

static int make_fifo(const char *path) {
  unlink(path);
  if (mkfifo(path, 0600) < 0) {
    fprintf(stderr, "berth-runsc-shim: mkfifo %s: %s\n", path, strerror(errno));
    return -1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: berth-runsc-shim <control-dir> <runsc> [global flags...] <verb> ...\n");
    return 2;
  }
  const char *control = argv[1];
  char **runsc = argv + 2; /* runsc's own argv: path, global flags, verb, ... */
  int nrunsc = argc - 2;
  /* Global flags may take separate values (--network host): look for the verb itself. */
  int verb = 1;
  while (verb < nrunsc && strcmp(runsc[verb], "create") != 0) verb++;
  if (verb >= nrunsc) {
    execv(runsc[0], runsc);
    fprintf(stderr, "berth-runsc-shim: exec %s: %s\n", runsc[0], strerror(errno));
    return 127;
  }
  const char *pid_file = NULL;
  for (int i = verb + 1; i < nrunsc; i++) {
    if (strcmp(runsc[i], "--pid-file") == 0 && i + 1 < nrunsc) pid_file = runsc[i + 1];
    else if (strncmp(runsc[i], "--pid-file=", 11) == 0) pid_file = runsc[i] + 11;
  }
  const char *id = runsc[nrunsc - 1];
  if (!pid_file || id[0] == '-') {
    fprintf(stderr, "berth-runsc-shim: create needs --pid-file and a container ID\n");
    return 2;
  }
  if (snprintf(start_fifo, sizeof(start_fifo), "%s/start", control) >= (int)sizeof(start_fifo) ||
      snprintf(started_fifo, sizeof(started_fifo), "%s/started", control) >= (int)sizeof(started_fifo)) {
    fprintf(stderr, "berth-runsc-shim: control dir path too long\n");
    return 2;
  }
  if (make_fifo(start_fifo) < 0 || make_fifo(started_fifo) < 0) return 1;
  int rc = run(runsc);
  if (rc != 0) return rc;
  /*
   * The request fifo's read end is open before the pid file tells conmon (and
   * so berth) that the container exists: berth may ask for the start at once,
   * and opening a fifo that nobody reads fails (ENXIO). The monitor inherits it.
   */
  int start_fd = open(start_fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (start_fd < 0) {
    fprintf(stderr, "berth-runsc-shim: open %s: %s\n", start_fifo, strerror(errno));
    return 1;
  }
  pid_t shim = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "berth-runsc-shim: fork of the monitor of %s: %s\n", id, strerror(errno));
    return 1;
  }
  if (pid == 0) monitor(shim, start_fd, runsc, verb, id);
  close(start_fd);
  if (write_pid_file(pid_file, pid) < 0) {
    fprintf(stderr, "berth-runsc-shim: writing %s: %s\n", pid_file, strerror(errno));
    kill(pid, SIGKILL);
    return 1;
  }
  return 0;
}
