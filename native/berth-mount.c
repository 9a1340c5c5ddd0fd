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
 *   berth-mount pin <ipc-file|-> <uts-file|-> <hostname|->
 *     New IPC and/or UTS namespaces (a "-" file skips that one), the UTS
 *     one given <hostname>, each bind-mounted onto its file (which must
 *     exist): what a pod without an infra process keeps its namespaces in.
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

static int bind_own_namespace(const char *kind, const char *file) {
  char source[32];
  snprintf(source, sizeof(source), "/proc/self/ns/%s", kind);
  if (mount(source, file, "none", MS_BIND, NULL) < 0) {
    fprintf(stderr, "berth-mount: bind-mounting the new %s namespace onto %s: %s\n", kind, file,
            strerror(errno));
    return 1;
  }
  return 0;
}

static int cmd_pin(const char *ipc_file, const char *uts_file, const char *hostname) {
  int want_ipc = strcmp(ipc_file, "-") != 0;
  int want_uts = strcmp(uts_file, "-") != 0;
  int flags = (want_ipc ? CLONE_NEWIPC : 0) | (want_uts ? CLONE_NEWUTS : 0);
  if (flags == 0) return 0;
  if (unshare(flags) < 0) {
    fprintf(stderr, "berth-mount: unshare of the pod's%s%s namespaces: %s\n", want_ipc ? " IPC" : "",
            want_uts ? " UTS" : "", strerror(errno));
    return 1;
  }
  // Set before the namespace is pinned, so nobody ever joins it nameless.
  if (want_uts && strcmp(hostname, "-") != 0 && sethostname(hostname, strlen(hostname)) < 0) {
    fprintf(stderr, "berth-mount: setting hostname %s: %s\n", hostname, strerror(errno));
    return 1;
  }
  if (want_ipc && bind_own_namespace("ipc", ipc_file) != 0) return 1;
  // A failure here leaves the IPC mount: the caller unmounts both files.
  if (want_uts && bind_own_namespace("uts", uts_file) != 0) return 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 6 && strcmp(argv[1], "mount") == 0) return cmd_mount(argv[2], argv[3], argv[4], argv[5]);
  if ((argc == 3 || argc == 4) && strcmp(argv[1], "umount") == 0) {
    if (argc == 4 && strcmp(argv[3], "lazy") != 0) goto usage;
    return cmd_umount(argv[2], argc == 4);
  }
  if (argc == 3 && strcmp(argv[1], "netns") == 0) return cmd_netns(argv[2]);
  if (argc == 5 && strcmp(argv[1], "pin") == 0) return cmd_pin(argv[2], argv[3], argv[4]);
usage:
  fprintf(stderr,
          "usage: berth-mount mount <fstype> <source> <target> <options>\n"
          "       berth-mount umount <target> [lazy]\n"
          "       berth-mount netns <file>\n"
          "       berth-mount pin <ipc-file|-> <uts-file|-> <hostname|->\n");
  return 2;
}
