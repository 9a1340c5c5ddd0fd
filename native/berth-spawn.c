/*
 * berth-spawn: starts short-lived programs for berth and hands back what they
 * printed and how they ended.
 *
 * Node's child_process forks the whole daemon (page tables of ~100 MiB) and
 * waits for the exec with the event loop held: 5-15 ms per process, several
 * times per pod. This helper is small and uses posix_spawn (vfork semantics),
 * and berth only writes a request and later reads a reply, never blocking.
 *
 * Protocol on stdin (requests) and stdout (replies), little-endian u32s:
 *   spawn:   len, op 0, id, timeout_ms (0: none), max_output, argc, envc,
 *            flags, nstreams, then NUL-terminated strings: file, argv[argc],
 *            env[envc], [cwd], then nstreams x (child fd, 16-byte token),
 *            then the child's stdin bytes up to len.
 *            flags: 1 cwd given, 2 new session (setsid), 4 report the pid at
 *            once, 8 stdin/stdout/stderr not given as streams are /dev/null.
 *   signal:  len, op 1, id, signal: sent only while the process is unreaped,
 *            so never to a recycled pid.
 *   reply:   len, id, kind (0 exited, 1 signaled, 2 not started, 3 started),
 *            value (exit code, signal, errno, pid), timed_out, stdout_len,
 *            stderr_len, then stdout and stderr (each capped at max_output).
 *   adopted: a reply with id 0, kind 4, value the pid, timed_out the raw wait
 *            status, no output: a process this helper did not start ended.
 * The helper is a child subreaper: what its programs leave behind (conmon
 * once it daemonizes, a container whose conmon died) becomes its child, is
 * reaped at once (this machine's PID 1 reaps late) and reported as adopted,
 * so berth learns such a container's real exit status.
 * A stream is a connection to berth's abstract unix socket (argv[1]) that
 * starts with the token and becomes the child's fd: how conmon's sync and
 * start pipes and an exec's stdio reach berth as sockets it reads and writes.
 * The final reply is sent once the process has ended and closed the outputs
 * captured here. A file without a slash is searched in the PATH of the
 * request's environment. At the end of stdin it finishes the running
 * requests and exits; it dies with berth (PR_SET_PDEATHSIG), leaving its
 * children to run on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MAX_REQUEST (64u << 20)
#define SPAWN_WORDS 8 /* op .. nstreams */
#define TOKEN_BYTES 16
#define MAX_STREAMS 8
#define FLAG_CWD 1
#define FLAG_SETSID 2
#define FLAG_REPORT_START 4
#define FLAG_DISCARD 8
#define OP_SPAWN 0
#define OP_SIGNAL 1
#define KIND_STARTED 3
#define KIND_ADOPTED 4

struct buf {
  char *data;
  size_t len, cap;
};

struct job {
  uint32_t id;
  pid_t pid;
  int in_fd, out_fd, err_fd;
  struct buf input; /* owned copy of the child's stdin */
  size_t input_off;
  struct buf out, err;
  size_t max_output;
  int64_t deadline_ms; /* 0: none */
  int ended, status, timed_out;
  struct job *next;
};

static struct job *jobs;
static struct buf requests;
static const char *stream_socket; /* abstract name, without the leading NUL */

static void die(const char *what) {
  fprintf(stderr, "berth-spawn: %s: %s\n", what, strerror(errno));
  _exit(1);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void buf_append(struct buf *b, const char *data, size_t len) {
  if (b->len + len > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + len) cap *= 2;
    char *grown = realloc(b->data, cap);
    if (!grown) die("out of memory");
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, data, len);
  b->len += len;
}

static void write_all(const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(STDOUT_FILENO, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) _exit(0); /* berth is gone: nobody left to answer */
    p += n;
    len -= (size_t)n;
  }
}

static void reply(uint32_t id, uint32_t kind, uint32_t value, uint32_t timed_out, const struct buf *out,
                  const struct buf *err) {
  uint32_t out_len = out ? (uint32_t)out->len : 0, err_len = err ? (uint32_t)err->len : 0;
  uint32_t header[7] = {6 * 4 + out_len + err_len, id, kind, value, timed_out, out_len, err_len};
  write_all(header, sizeof header);
  if (out_len) write_all(out->data, out_len);
  if (err_len) write_all(err->data, err_len);
}

static void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) die("fcntl");
}

static const char *env_path(char *const envp[]) {
  for (size_t i = 0; envp[i]; i++)
    if (strncmp(envp[i], "PATH=", 5) == 0) return envp[i] + 5;
  return "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/* posix_spawn with execvp's search, but over the child's own PATH. */
static int spawn_searching(pid_t *pid, const char *file, posix_spawn_file_actions_t *actions,
                           posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
  if (strchr(file, '/')) return posix_spawn(pid, file, actions, attr, argv, envp);
  if (!*file) return ENOENT;
  const char *path = env_path(envp);
  int last = ENOENT;
  size_t file_len = strlen(file);
  for (const char *dir = path;; dir = strchr(dir, ':') + 1) {
    const char *end = strchr(dir, ':');
    size_t dir_len = end ? (size_t)(end - dir) : strlen(dir);
    char *candidate = malloc(dir_len + file_len + 3);
    if (!candidate) return ENOMEM;
    if (dir_len == 0)
      sprintf(candidate, "./%s", file);
    else
      sprintf(candidate, "%.*s/%s", (int)dir_len, dir, file);
    int rc = access(candidate, X_OK) == 0 ? posix_spawn(pid, candidate, actions, attr, argv, envp) : errno;
    free(candidate);
    if (rc == 0) return 0;
    if (rc != ENOENT && rc != ENOTDIR && rc != EACCES) return rc;
    if (rc == EACCES) last = EACCES;
    if (!end) return last;
  }
}

static void malformed(const char *why) {
  fprintf(stderr, "berth-spawn: malformed request: %s\n", why);
  _exit(1);
}

/* A connection to berth's stream socket, announced by its token; well above the fds it will replace. */
static int connect_stream(const char *token) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t name_len = stream_socket ? strlen(stream_socket) : 0;
  if (!name_len || name_len + 1 > sizeof addr.sun_path) return -EINVAL;
  memcpy(addr.sun_path + 1, stream_socket, name_len);
  errno = 0;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name_len);
  if (connect(fd, (struct sockaddr *)&addr, addr_len) < 0 || write(fd, token, TOKEN_BYTES) != TOKEN_BYTES) {
    int err = errno ? errno : EIO;
    close(fd);
    return -err;
  }
  int high = fcntl(fd, F_DUPFD_CLOEXEC, 64);
  int err = errno;
  close(fd);
  return high < 0 ? -err : high;
}

static struct job *find_job(uint32_t id) {
  for (struct job *job = jobs; job; job = job->next)
    if (job->id == id) return job;
  return NULL;
}

static void start_job(const char *frame, uint32_t len) {
  uint32_t header[SPAWN_WORDS];
  if (len < 3 * 4) malformed("too short");
  memcpy(header, frame, 3 * 4);
  if (header[0] == OP_SIGNAL) {
    struct job *job = find_job(header[1]);
    if (job && !job->ended) kill(job->pid, (int)header[2]);
    return;
  }
  if (header[0] != OP_SPAWN || len < sizeof header) malformed("unknown operation or too short");
  memcpy(header, frame, sizeof header);
  uint32_t id = header[1], timeout_ms = header[2], max_output = header[3], argc = header[4], envc = header[5],
           flags = header[6], nstreams = header[7];
  if (nstreams > MAX_STREAMS) malformed("too many streams");
  const char *p = frame + sizeof header, *end = frame + len;
  uint32_t nstrings = 1 + argc + envc + ((flags & FLAG_CWD) ? 1 : 0);
  if (argc == 0 || nstrings > (uint32_t)(end - p)) malformed("string count");
  char **strings = calloc(nstrings, sizeof(char *));
  if (!strings) die("out of memory");
  for (uint32_t i = 0; i < nstrings; i++) {
    const char *nul = memchr(p, 0, (size_t)(end - p));
    if (!nul) malformed("unterminated string");
    strings[i] = (char *)p;
    p = nul + 1;
  }
  const char *file = strings[0];
  /* argv and envp need their own NULL terminators: copy the pointers. */
  char **argv = calloc(argc + 1, sizeof(char *));
  char **envp = calloc(envc + 1, sizeof(char *));
  if (!argv || !envp) die("out of memory");
  memcpy(argv, strings + 1, argc * sizeof(char *));
  memcpy(envp, strings + 1 + argc, envc * sizeof(char *));
  const char *cwd = (flags & FLAG_CWD) ? strings[1 + argc + envc] : NULL;

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  int streamed[3] = {0, 0, 0};
  int stream_fds[MAX_STREAMS];
  int rc = 0;
  for (uint32_t i = 0; i < nstreams; i++) {
    if ((size_t)(end - p) < 4 + TOKEN_BYTES) malformed("stream spec");
    uint32_t child_fd;
    memcpy(&child_fd, p, 4);
    if (child_fd > 63) malformed("stream fd");
    int fd = rc ? -1 : connect_stream(p + 4);
    if (fd < 0 && !rc) rc = -fd;
    stream_fds[i] = fd;
    if (fd >= 0) posix_spawn_file_actions_adddup2(&actions, fd, (int)child_fd);
    if (child_fd < 3) streamed[child_fd] = 1;
    p += 4 + TOKEN_BYTES;
  }
  int pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
  for (int fd = 0; fd < 3; fd++) {
    if (streamed[fd]) continue;
    if (flags & FLAG_DISCARD) {
      posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
      continue;
    }
    if (pipe2(pipes[fd], O_CLOEXEC) < 0) die("pipe2");
    posix_spawn_file_actions_adddup2(&actions, pipes[fd][fd == 0 ? 0 : 1], fd);
  }
  if (cwd) posix_spawn_file_actions_addchdir_np(&actions, cwd);
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      ((flags & FLAG_SETSID) ? POSIX_SPAWN_SETSID : 0));
  pid_t pid = 0;
  if (!rc) rc = spawn_searching(&pid, file, &actions, &attr, argv, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (uint32_t i = 0; i < nstreams; i++)
    if (stream_fds[i] >= 0) close(stream_fds[i]);
  /* The child's ends; ours are [0][1] (its stdin) and [1][0], [2][0] (its output). */
  if (pipes[0][0] >= 0) close(pipes[0][0]);
  if (pipes[1][1] >= 0) close(pipes[1][1]);
  if (pipes[2][1] >= 0) close(pipes[2][1]);
  if (rc != 0) {
    if (pipes[0][1] >= 0) close(pipes[0][1]);
    if (pipes[1][0] >= 0) close(pipes[1][0]);
    if (pipes[2][0] >= 0) close(pipes[2][0]);
    reply(id, 2, (uint32_t)rc, 0, NULL, NULL);
  } else {
    struct job *job = calloc(1, sizeof *job);
    if (!job) die("out of memory");
    job->id = id;
    job->pid = pid;
    job->in_fd = pipes[0][1];
    job->out_fd = pipes[1][0];
    job->err_fd = pipes[2][0];
    job->max_output = max_output;
    job->deadline_ms = timeout_ms ? now_ms() + timeout_ms : 0;
    if (p < end) buf_append(&job->input, p, (size_t)(end - p));
    if (job->in_fd >= 0) set_nonblocking(job->in_fd);
    if (job->out_fd >= 0) set_nonblocking(job->out_fd);
    if (job->err_fd >= 0) set_nonblocking(job->err_fd);
    if (job->in_fd >= 0 && job->input.len == 0) {
      close(job->in_fd);
      job->in_fd = -1;
    }
    job->next = jobs;
    jobs = job;
    if (flags & FLAG_REPORT_START) reply(id, KIND_STARTED, (uint32_t)pid, 0, NULL, NULL);
  }
  free(strings);
  free(argv);
  free(envp);
}

/* Complete frames in the request buffer become jobs; a partial one waits. */
static void take_requests(void) {
  size_t off = 0;
  while (requests.len - off >= 4) {
    uint32_t len;
    memcpy(&len, requests.data + off, 4);
    if (len > MAX_REQUEST) {
      fprintf(stderr, "berth-spawn: request of %u bytes is over the limit\n", len);
      _exit(1);
    }
    if (requests.len - off - 4 < len) break;
    start_job(requests.data + off + 4, len);
    off += 4 + (size_t)len;
  }
  if (off == 0) return;
  memmove(requests.data, requests.data + off, requests.len - off);
  requests.len -= off;
}

static void drain(struct job *job, int *fd, struct buf *into) {
  char chunk[65536];
  for (;;) {
    ssize_t n = read(*fd, chunk, sizeof chunk);
    if (n > 0) {
      size_t room = into->len < job->max_output ? job->max_output - into->len : 0;
      buf_append(into, chunk, (size_t)n < room ? (size_t)n : room);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(*fd); /* end of output, or an error reading it: either way done */
    *fd = -1;
    return;
  }
}

static void feed(struct job *job) {
  while (job->input_off < job->input.len) {
    ssize_t n = write(job->in_fd, job->input.data + job->input_off, job->input.len - job->input_off);
    if (n > 0) {
      job->input_off += (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    break; /* EPIPE: the program stopped reading; what it does next is its business */
  }
  close(job->in_fd);
  job->in_fd = -1;
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    int ours = 0;
    for (struct job *job = jobs; job; job = job->next)
      if (job->pid == pid) {
        ours = 1;
        job->ended = 1;
        job->status = status;
        if (job->in_fd >= 0) {
          close(job->in_fd);
          job->in_fd = -1;
        }
      }
    if (!ours) reply(0, KIND_ADOPTED, (uint32_t)pid, (uint32_t)status, NULL, NULL);
  }
}

static void finish_done_jobs(void) {
  for (struct job **link = &jobs; *link;) {
    struct job *job = *link;
    if (!job->ended || job->out_fd >= 0 || job->err_fd >= 0) {
      link = &job->next;
      continue;
    }
    if (WIFSIGNALED(job->status))
      reply(job->id, 1, (uint32_t)WTERMSIG(job->status), (uint32_t)job->timed_out, &job->out, &job->err);
    else
      reply(job->id, 0, (uint32_t)WEXITSTATUS(job->status), (uint32_t)job->timed_out, &job->out, &job->err);
    *link = job->next;
    free(job->input.data);
    free(job->out.data);
    free(job->err.data);
    free(job);
  }
}

int main(int argc, char **argv) {
  stream_socket = argc > 1 ? argv[1] : NULL;
  pid_t parent = getppid();
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) die("prctl");
  if (getppid() != parent) return 0; /* berth died before the line above */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) die("prctl");
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0) die("sigprocmask");
  int sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) die("signalfd");
  set_nonblocking(STDIN_FILENO);
  int input_open = 1;

  while (input_open || jobs) {
    size_t njobs = 0;
    for (struct job *job = jobs; job; job = job->next) njobs++;
    struct pollfd *fds = calloc(2 + 3 * njobs, sizeof *fds);
    struct job **owners = calloc(2 + 3 * njobs, sizeof *owners);
    if (!fds || !owners) die("out of memory");
    size_t n = 0;
    fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
    if (input_open) fds[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
    int64_t next_deadline = 0;
    for (struct job *job = jobs; job; job = job->next) {
      if (job->in_fd >= 0) owners[n] = job, fds[n++] = (struct pollfd){.fd = job->in_fd, .events = POLLOUT};
      if (job->out_fd >= 0) owners[n] = job, fds[n++] = (struct pollfd){.fd = job->out_fd, .events = POLLIN};
      if (job->err_fd >= 0) owners[n] = job, fds[n++] = (struct pollfd){.fd = job->err_fd, .events = POLLIN};
      if (job->deadline_ms && !job->timed_out && (!next_deadline || job->deadline_ms < next_deadline))
        next_deadline = job->deadline_ms;
    }
    int wait_ms = -1;
    if (next_deadline) {
      int64_t left = next_deadline - now_ms();
      wait_ms = left < 0 ? 0 : (int)left;
    }
    if (poll(fds, n, wait_ms) < 0 && errno != EINTR) die("poll");

    for (size_t i = 0; i < n; i++) {
      if (!fds[i].revents) continue;
      if (fds[i].fd == sfd) {
        struct signalfd_siginfo info;
        while (read(sfd, &info, sizeof info) > 0) {
        }
        reap();
      } else if (fds[i].fd == STDIN_FILENO && !owners[i]) {
        char chunk[65536];
        for (;;) {
          ssize_t got = read(STDIN_FILENO, chunk, sizeof chunk);
          if (got > 0) {
            buf_append(&requests, chunk, (size_t)got);
            continue;
          }
          if (got < 0 && errno == EINTR) continue;
          if (got == 0 || (errno != EAGAIN)) input_open = 0;
          break;
        }
        take_requests();
      } else {
        struct job *job = owners[i];
        if (fds[i].fd == job->in_fd)
          feed(job);
        else if (fds[i].fd == job->out_fd)
          drain(job, &job->out_fd, &job->out);
        else if (fds[i].fd == job->err_fd)
          drain(job, &job->err_fd, &job->err);
      }
    }
    free(fds);
    free(owners);

    int64_t now = now_ms();
    for (struct job *job = jobs; job; job = job->next)
      if (job->deadline_ms && !job->timed_out && !job->ended && now >= job->deadline_ms) {
        job->timed_out = 1;
        kill(job->pid, SIGKILL);
      }
    reap(); /* a SIGCHLD may have arrived after the poll */
    finish_done_jobs();
  }
  return 0;
}
