/*
 * berth-idmap: ID-mapped mounts for berth's user-namespaced pods.
 *
 * Node cannot call open_tree/mount_setattr/move_mount and Debian 12's runc
 * and mount(8) cannot make ID-mapped mounts, so berth uses this helper.
 *
 *   berth-idmap mount <userns-file> <source> <target> [<source> <target>...]
 *     Clones each source directory, marks the clone read-only and ID-mapped
 *     through the user namespace at <userns-file> (e.g. /proc/<pid>/ns/user),
 *     and attaches it at target (an existing directory). All or nothing: on a
 *     failure the mounts already made are detached again.
 *
 *   berth-idmap pin <uid-map> <gid-map> <userns-file> [<netns-file>]
 *     Makes a user namespace with the given mappings ("0 1000 100000", lines
 *     separated by ','), and with <netns-file> a network namespace owned by
 *     it, and bind-mounts them onto the existing files so they outlive this
 *     process (as `unshare --user=FILE` would, but with arbitrary mappings).
 *     A pod's infra and containers join both; its CNI runs on the netns.
 *
 *   berth-idmap probe <dir>
 *     Exits 0 when the filesystem of <dir> accepts ID-mapped mounts (tried on
 *     a detached clone with a throwaway user namespace; nothing is attached).
 *
 * Errors go to stderr as one line naming the step and path; exit code 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int sys_open_tree(int dfd, const char *path, unsigned int flags) {
  return (int)syscall(SYS_open_tree, dfd, path, flags);
}

static int sys_mount_setattr(int dfd, const char *path, unsigned int flags, struct mount_attr *attr) {
  return (int)syscall(SYS_mount_setattr, dfd, path, flags, attr, sizeof(*attr));
}

#ifndef MNT_DETACH
#define MNT_DETACH 2
#endif

static int sys_umount_detach(const char *target) { return (int)syscall(SYS_umount2, target, MNT_DETACH); }

static int sys_move_mount(int from_dfd, const char *from, int to_dfd, const char *to, unsigned int flags) {
  return (int)syscall(SYS_move_mount, from_dfd, from, to_dfd, to, flags);
}

/* A detached, read-only clone of `source` mapped through `userns_fd`; -1 on error (message printed). */
static int idmapped_clone(const char *source, int userns_fd) {
  int tree = sys_open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (tree < 0) {
    fprintf(stderr, "berth-idmap: open_tree %s: %s\n", source, strerror(errno));
    return -1;
  }
  struct mount_attr attr;
  memset(&attr, 0, sizeof(attr));
  attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY;
  attr.userns_fd = (uint64_t)userns_fd;
  if (sys_mount_setattr(tree, "", AT_EMPTY_PATH, &attr) < 0) {
    fprintf(stderr, "berth-idmap: mount_setattr(MOUNT_ATTR_IDMAP) %s: %s\n", source, strerror(errno));
    close(tree);
    return -1;
  }
  return tree;
}

static int cmd_mount(int argc, char **argv) {
  if (argc < 3 || (argc - 1) % 2 != 0) {
    fprintf(stderr, "berth-idmap: mount wants <userns-file> followed by <source> <target> pairs\n");
    return 1;
  }
  int userns_fd = open(argv[0], O_RDONLY | O_CLOEXEC);
  if (userns_fd < 0) {
    fprintf(stderr, "berth-idmap: opening user namespace %s: %s\n", argv[0], strerror(errno));
    return 1;
  }
  int done = 0;
  for (int i = 1; i < argc; i += 2) {
    const char *source = argv[i], *target = argv[i + 1];
    int tree = idmapped_clone(source, userns_fd);
    if (tree < 0) break;
    int rc = sys_move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    int saved = errno;
    close(tree);
    if (rc < 0) {
      fprintf(stderr, "berth-idmap: move_mount %s -> %s: %s\n", source, target, strerror(saved));
      break;
    }
    done++;
  }
  close(userns_fd);
  if (done * 2 == argc - 1) return 0;
  /* All or nothing: detach what this run attached. */
  for (int j = 0; j < done; j++) {
    const char *target = argv[2 + 2 * j];
    if (sys_umount_detach(target) < 0)
      fprintf(stderr, "berth-idmap: undoing the mount at %s: %s\n", target, strerror(errno));
  }
  return 1;
}

/* A child holding new namespaces (`flags`) until *release is closed; its pid, or -1. */
static pid_t namespace_child(int flags, int *release) {
  int ready[2], hold[2];
  if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(hold, O_CLOEXEC) < 0) {
    perror("berth-idmap: pipe");
    return -1;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("berth-idmap: fork");
    return -1;
  }
  if (child == 0) {
    char byte = 'x';
    close(ready[0]);
    close(hold[1]);
    if (unshare(flags) < 0) {
      fprintf(stderr, "berth-idmap: unshare: %s\n", strerror(errno));
      _exit(2);
    }
    if (write(ready[1], &byte, 1) != 1) _exit(2);
    /* Hold the namespaces until the parent closes its end (or dies). */
    while (read(hold[0], &byte, 1) < 0 && errno == EINTR) {
    }
    _exit(0);
  }
  close(ready[1]);
  close(hold[0]);
  char byte;
  ssize_t n;
  while ((n = read(ready[0], &byte, 1)) < 0 && errno == EINTR) {
  }
  close(ready[0]);
  *release = hold[1];
  if (n != 1) {
    close(hold[1]);
    waitpid(child, NULL, 0);
    return -1;
  }
  return child;
}

static void release_child(pid_t child, int release) {
  close(release);
  while (waitpid(child, NULL, 0) < 0 && errno == EINTR) {
  }
}

/* Writes /proc/<pid>/<file> with `map`, where ',' separates lines. */
static int write_map(pid_t pid, const char *file, const char *map) {
  char path[64], buf[4096];
  size_t len = strlen(map);
  if (len + 2 > sizeof(buf)) {
    fprintf(stderr, "berth-idmap: %s too long\n", file);
    return -1;
  }
  for (size_t i = 0; i < len; i++) buf[i] = map[i] == ',' ? '\n' : map[i];
  buf[len] = '\n';
  snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, buf, len + 1) != (ssize_t)(len + 1)) {
    fprintf(stderr, "berth-idmap: writing %s \"%s\": %s\n", file, map, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  return 0;
}

static int bind_ns(pid_t pid, const char *ns, const char *target) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)pid, ns);
  if (syscall(SYS_mount, path, target, NULL, (unsigned long)MS_BIND, NULL) < 0) {
    fprintf(stderr, "berth-idmap: bind-mounting %s onto %s: %s\n", path, target, strerror(errno));
    return -1;
  }
  return 0;
}

static int cmd_pin(const char *uid_map, const char *gid_map, const char *user_file, const char *net_file) {
  int release;
  pid_t child = namespace_child(CLONE_NEWUSER | (net_file ? CLONE_NEWNET : 0), &release);
  if (child < 0) return 1;
  int rc = 1;
  if (write_map(child, "uid_map", uid_map) == 0 && write_map(child, "gid_map", gid_map) == 0 &&
      bind_ns(child, "user", user_file) == 0) {
    if (!net_file || bind_ns(child, "net", net_file) == 0)
      rc = 0;
    else if (sys_umount_detach(user_file) < 0)
      fprintf(stderr, "berth-idmap: undoing the mount at %s: %s\n", user_file, strerror(errno));
  }
  release_child(child, release);
  return rc;
}

static int cmd_probe(const char *dir) {
  int release;
  pid_t child = namespace_child(CLONE_NEWUSER, &release);
  if (child < 0) return 1;
  int rc = 1;
  if (write_map(child, "uid_map", "0 65536 65536") == 0 && write_map(child, "gid_map", "0 65536 65536") == 0) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)child);
    int userns_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (userns_fd < 0) {
      fprintf(stderr, "berth-idmap: opening %s: %s\n", path, strerror(errno));
    } else {
      int tree = idmapped_clone(dir, userns_fd);
      if (tree >= 0) {
        rc = 0;
        close(tree);
      }
      close(userns_fd);
    }
  }
  release_child(child, release);
  return rc;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "mount") == 0) return cmd_mount(argc - 2, argv + 2);
  if (argc == 3 && strcmp(argv[1], "probe") == 0) return cmd_probe(argv[2]);
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "pin") == 0)
    return cmd_pin(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
  fprintf(stderr,
          "usage: berth-idmap mount <userns-file> <source> <target> [<source> <target>...]\n"
          "       berth-idmap pin <uid-map> <gid-map> <userns-file> [<netns-file>]\n"
          "       berth-idmap probe <dir>\n");
  return 2;
}
