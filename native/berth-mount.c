/*
 * berth-mount: the mounts berth makes on every pod and container start, as
 * plain system calls.
 *
 * util-linux mount(8), umount(8) and unshare(1) do the same work but first
 * load libmount, libblkid and libselinux and read the mount tables: about
 * 14 ms each on a small node, against about 1 ms here, several times per pod.
 * berth falls back to them when this helper was not built.
 *
 *   berth-mount mount <fstype> <source> <target> <options>
 *     <options> is a comma list: ro, nosuid, nodev, noexec, noatime,
 *     relatime, strictatime become mount flags, everything else goes to the
 *     filesystem as data (lowerdir=...,upperdir=..., size=...,mode=...).
 *     Relative paths in the data resolve against the working directory.
 *
 *   berth-mount umount <target> [lazy]
 *     Unmounts <target>; with "lazy" detaches it even while busy.
 *     Exit 3 when <target> is not a mount point.
 *
 *   berth-mount netns <file>
 *     A new network namespace, bind-mounted onto <file> (which must exist)
 *     so it outlives this process, as `unshare --net=<file>` does.
 *
 * Errors go to stderr as one line naming the step and path; exit code 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define EXIT_NOT_MOUNTED 3

struct flag_name {
  const char *name;
  unsigned long flag;
};

static const struct flag_name FLAGS[] = {
    {"ro", MS_RDONLY},        {"nosuid", MS_NOSUID},   {"nodev", MS_NODEV},
    {"noexec", MS_NOEXEC},    {"noatime", MS_NOATIME}, {"relatime", MS_RELATIME},
    {"strictatime", MS_STRICTATIME},
};

static int cmd_mount(const char *fstype, const char *source, const char *target, const char *options) {
  size_t len = strlen(options);
  char *copy = strdup(options);
  char *data = calloc(len + 1, 1);
  if (!copy || !data) {
    fprintf(stderr, "berth-mount: out of memory\n");
    return 1;
  }
  unsigned long flags = 0;
  char *save = NULL;
  for (char *opt = strtok_r(copy, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
    int known = 0;
    for (size_t i = 0; i < sizeof(FLAGS) / sizeof(FLAGS[0]); i++) {
      if (strcmp(opt, FLAGS[i].name) == 0) {
        flags |= FLAGS[i].flag;
        known = 1;
        break;
      }
    }
    if (known) continue;
    if (data[0]) strcat(data, ",");
    strcat(data, opt);
  }
  if (mount(source, target, fstype, flags, data[0] ? data : NULL) < 0) {
    fprintf(stderr, "berth-mount: mount -t %s %s at %s: %s\n", fstype, source, target, strerror(errno));
    return 1;
  }
  return 0;
}

static int cmd_umount(const char *target, int lazy) {
  if (umount2(target, lazy ? MNT_DETACH : 0) == 0) return 0;
  int saved = errno;
  if (saved == EINVAL || saved == ENOENT) return EXIT_NOT_MOUNTED;
  fprintf(stderr, "berth-mount: umount %s: %s\n", target, strerror(saved));
  return 1;
}

static int cmd_netns(const char *file) {
  if (unshare(CLONE_NEWNET) < 0) {
    fprintf(stderr, "berth-mount: unshare(CLONE_NEWNET) for %s: %s\n", file, strerror(errno));
    return 1;
  }
  if (mount("/proc/self/ns/net", file, "none", MS_BIND, NULL) < 0) {
    fprintf(stderr, "berth-mount: bind-mounting the new network namespace onto %s: %s\n", file,
            strerror(errno));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 6 && strcmp(argv[1], "mount") == 0) return cmd_mount(argv[2], argv[3], argv[4], argv[5]);
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "umount") == 0) {
    if (argc == 4 && strcmp(argv[3], "lazy") != 0) goto usage;
    return cmd_umount(argv[2], argc == 4);
  }
  if (argc == 3 && strcmp(argv[1], "netns") == 0) return cmd_netns(argv[2]);
usage:
  fprintf(stderr,
          "usage: berth-mount mount <fstype> <source> <target> <options>\n"
          "       berth-mount umount <target> [lazy]\n"
          "       berth-mount netns <file>\n");
  return 2;
}
