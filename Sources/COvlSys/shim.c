#define _GNU_SOURCE 1
#include "COvlSys.h"
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <linux/btrfs.h>
#include <linux/mount.h>

const int covl_O_PATH = O_PATH;
const int covl_O_TMPFILE = O_TMPFILE;
const int covl_AT_EMPTY_PATH = AT_EMPTY_PATH;
const unsigned int covl_RENAME_NOREPLACE = RENAME_NOREPLACE;
const unsigned int covl_RENAME_EXCHANGE = RENAME_EXCHANGE;
const unsigned int covl_RENAME_WHITEOUT = RENAME_WHITEOUT;
const long covl_UTIME_NOW = UTIME_NOW;
const long covl_UTIME_OMIT = UTIME_OMIT;
const uint64_t covl_RESOLVE_BENEATH = RESOLVE_BENEATH;
const uint64_t covl_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
const uint64_t covl_RESOLVE_NO_XDEV = RESOLVE_NO_XDEV;
const uint64_t covl_RESOLVE_IN_ROOT = RESOLVE_IN_ROOT;
const int covl_MAX_HANDLE_SZ = MAX_HANDLE_SZ;

static_assert(offsetof(struct dirent64, d_reclen) == COVL_DIRENT64_RECLEN_OFFSET, "dirent64 reclen");
static_assert(offsetof(struct dirent64, d_type) == COVL_DIRENT64_TYPE_OFFSET, "dirent64 type");
static_assert(offsetof(struct dirent64, d_name) == COVL_DIRENT64_NAME_OFFSET, "dirent64 name");
static_assert(sizeof(((struct covl_file_handle *)0)->f_handle) == MAX_HANDLE_SZ, "file_handle size");
static_assert(offsetof(struct covl_file_handle, f_handle) == offsetof(struct file_handle, f_handle),
              "file_handle layout");

int covl_renameat2(int od, const char *op, int nd, const char *np, unsigned int flags) {
  return renameat2(od, op, nd, np, flags);
}
int covl_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) {
  return statx(dirfd, path, flags, mask, buf);
}
ssize_t covl_getdents64(int fd, void *buf, size_t len) { return getdents64(fd, buf, len); }
ssize_t covl_copy_file_range(int in, int64_t off_in, int out, int64_t off_out, size_t len) {
  loff_t i = off_in, o = off_out;
  return copy_file_range(in, &i, out, &o, len, 0);
}
int covl_ficlone(int dst_fd, int src_fd) { return ioctl(dst_fd, FICLONE, src_fd); }
int covl_syncfs(int fd) { return syncfs(fd); }
int covl_name_to_handle_at(int dirfd, const char *path, struct covl_file_handle *fh, int *mount_id,
                           int flags) {
  fh->handle_bytes = MAX_HANDLE_SZ;
  return name_to_handle_at(dirfd, path, (struct file_handle *)fh, mount_id, flags);
}
int covl_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve) {
  struct open_how how = {.flags = (uint64_t)(unsigned)flags, .mode = mode, .resolve = resolve};
  return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}
/* Linux 6.5 UAPI; Debian 12's headers predate it. */
struct covl_fsuuid2 { uint8_t len; uint8_t uuid[16]; };
#define COVL_FS_IOC_GETFSUUID _IOR(0x15, 0, struct covl_fsuuid2)

int covl_get_fs_uuid(int fd, unsigned char uuid[16], unsigned char *len) {
  struct covl_fsuuid2 u = {0};
  int r = ioctl(fd, COVL_FS_IOC_GETFSUUID, &u);
  if (r == 0) {
    for (int i = 0; i < 16; i++) uuid[i] = i < u.len ? u.uuid[i] : 0;
    *len = u.len;
    return 0;
  }
  if (errno != ENOTTY) return r;
  /* btrfs has no FS_IOC_GETFSUUID; its s_uuid is the fsid. */
  struct btrfs_ioctl_fs_info_args info;
  memset(&info, 0, sizeof info);
  if (ioctl(fd, BTRFS_IOC_FS_INFO, &info) != 0) {
    errno = ENOTTY;
    return -1;
  }
  for (int i = 0; i < 16; i++) uuid[i] = info.fsid[i];
  *len = 16;
  return 0;
}
struct covl_xattr_args { uint64_t value; uint32_t size; uint32_t flags; };
#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif
ssize_t covl_getxattrat(int dirfd, const char *path, const char *name, void *value, size_t size) {
  struct covl_xattr_args args = {.value = (uint64_t)(uintptr_t)value, .size = (uint32_t)size, .flags = 0};
  return (ssize_t)syscall(SYS_getxattrat, dirfd, path, AT_SYMLINK_NOFOLLOW, name, &args, sizeof args);
}
ssize_t covl_listxattrat(int dirfd, const char *path, char *list, size_t size) {
  return (ssize_t)syscall(SYS_listxattrat, dirfd, path, AT_SYMLINK_NOFOLLOW, list, size);
}
#include <sys/file.h>
int covl_flock(int fd, int exclusive) { return flock(fd, exclusive ? LOCK_EX : LOCK_UN); }
int covl_flock_mode(int fd, int shared, int nonblocking) {
  return flock(fd, (shared ? LOCK_SH : LOCK_EX) | (nonblocking ? LOCK_NB : 0));
}
/* fcntl(2) F_SETLK(W) record lock on the whole file (containers/storage's lock files). */
int covl_record_lock(int fd, int shared, int wait) {
  struct flock lock = {.l_type = shared ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  return fcntl(fd, wait ? F_SETLKW : F_SETLK, &lock);
}
const int covl_SEEK_DATA = SEEK_DATA;
const int covl_SEEK_HOLE = SEEK_HOLE;
const unsigned int covl_FS_APPEND_FL = FS_APPEND_FL;
const unsigned int covl_FS_IMMUTABLE_FL = FS_IMMUTABLE_FL;
const unsigned int covl_FS_NOATIME_FL = FS_NOATIME_FL;
const unsigned int covl_FS_SYNC_FL = FS_SYNC_FL;
int covl_get_inode_flags(int fd, unsigned int *flags) {
  int v = 0;
  int r = ioctl(fd, FS_IOC_GETFLAGS, &v);
  if (r == 0) *flags = (unsigned int)v;
  return r;
}
int covl_set_inode_flags(int fd, unsigned int flags) {
  int v = (int)flags;
  return ioctl(fd, FS_IOC_SETFLAGS, &v);
}
const char *covl_errno_name(int errnum) { return strerrorname_np(errnum); }
dev_t covl_makedev(unsigned int maj, unsigned int min) { return makedev(maj, min); }
unsigned int covl_major(dev_t dev) { return major(dev); }
unsigned int covl_minor(dev_t dev) { return minor(dev); }

int covl_fs_type(int fd, long *type) {
  struct statfs s;
  if (fstatfs(fd, &s) == -1) return -1;
  *type = (long)s.f_type;
  return 0;
}

/* open_by_handle_at(2) with a handle built from its parts (GNU-only in glibc). */
int covl_open_by_handle_at(int mount_fd, int type, const unsigned char *bytes, unsigned int len, int flags) {
  struct covl_file_handle fh;
  if (len > sizeof(fh.f_handle)) { errno = EINVAL; return -1; }
  fh.handle_bytes = len;
  fh.handle_type = type;
  memcpy(fh.f_handle, bytes, len);
  return open_by_handle_at(mount_fd, (struct file_handle *)&fh, flags);
}

/* The probe builds an overlay superblock that cannot come to be: `dirfd` as its upperdir,
 * the directory above it as workdir and lower. ovl_fill_super() takes the in-use mark of the
 * upper root (ovl_get_upper(): EBUSY with index=on when another superblock holds it) before
 * anything else can fail, and then always fails with EINVAL in ovl_get_workdir(), because a
 * workdir that contains the upperdir (or sits on another mount) is refused before the work
 * dir is made. So EBUSY means in use, EINVAL free, and nothing is written in either case.
 * The mark is on the inode: relative, escaped or since-renamed option strings, bind mounts
 * and other mount namespaces do not matter. The kernel logs one line for each probe. */
int covl_overlay_dir_in_use(int dirfd) {
  int result = -1, saved = 0;
  int parent = openat(dirfd, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (parent < 0) return -1;
  int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
  if (fs < 0) { saved = errno; close(parent); errno = saved; return -1; }
  if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_FD, "upperdir", NULL, dirfd) == 0 &&
      syscall(SYS_fsconfig, fs, FSCONFIG_SET_FD, "workdir", NULL, parent) == 0 &&
      syscall(SYS_fsconfig, fs, FSCONFIG_SET_FD, "lowerdir+", NULL, parent) == 0 &&
      syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "index", "on", 0) == 0) {
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) == 0) {
      saved = EPROTO; /* a kernel that accepts this stack: no answer (never mounted) */
    } else if (errno == EBUSY) {
      result = 1;
    } else if (errno == EINVAL) {
      result = 0;
    } else {
      saved = errno;
    }
  } else {
    saved = errno;
  }
  close(fs);
  close(parent);
  if (result < 0) errno = saved;
  return result;
}

/* A test hook: SIGALRM every `usec` microseconds, caught by a handler that does nothing and
 * installed without SA_RESTART, so that every blocking or long system call of the process
 * (read, write, copy_file_range, flock, ...) can return EINTR or a short count, as in a
 * program that uses the library and has its own signal handlers. */
static void covl_ignore_signal(int signal) { (void)signal; }

int covl_signal_storm(long usec) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = covl_ignore_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;
  if (sigaction(SIGALRM, &action, NULL) != 0) return -1;
  struct itimerval timer;
  timer.it_interval.tv_sec = usec / 1000000;
  timer.it_interval.tv_usec = usec % 1000000;
  timer.it_value = timer.it_interval;
  return setitimer(ITIMER_REAL, &timer, NULL);
}
