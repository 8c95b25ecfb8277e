/* The Linux calls and constants that Swift's Glibc module hides (behind _GNU_SOURCE,
 * in headers it does not include, or as macros Swift cannot import). This header must
 * not define feature macros: clang would then refuse to merge glibc structs with the
 * Glibc module. The GNU-only calls live in shim.c as plain functions. */
#ifndef COVLSYS_H
#define COVLSYS_H
#include <stdint.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <linux/stat.h>

extern const int covl_O_PATH, covl_O_TMPFILE, covl_AT_EMPTY_PATH;
extern const unsigned int covl_RENAME_NOREPLACE, covl_RENAME_EXCHANGE, covl_RENAME_WHITEOUT;
extern const long covl_UTIME_NOW, covl_UTIME_OMIT;
extern const uint64_t covl_RESOLVE_BENEATH, covl_RESOLVE_NO_SYMLINKS, covl_RESOLVE_NO_XDEV, covl_RESOLVE_IN_ROOT;
extern const int covl_MAX_HANDLE_SZ;

enum { COVL_DIRENT64_RECLEN_OFFSET = 16, COVL_DIRENT64_TYPE_OFFSET = 18,
       COVL_DIRENT64_NAME_OFFSET = 19 };

struct covl_file_handle {
  uint32_t handle_bytes;
  int32_t handle_type;
  unsigned char f_handle[128];
};

int covl_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags);
int covl_statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf);
ssize_t covl_getdents64(int fd, void *buf, size_t len);
ssize_t covl_copy_file_range(int fd_in, int64_t off_in, int fd_out, int64_t off_out, size_t len);
int covl_ficlone(int dst_fd, int src_fd);
int covl_syncfs(int fd);
int covl_name_to_handle_at(int dirfd, const char *path, struct covl_file_handle *fh, int *mount_id, int flags);
int covl_open_by_handle_at(int mount_fd, int type, const unsigned char *bytes, unsigned int len, int flags);
int covl_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve);
int covl_get_fs_uuid(int fd, unsigned char uuid[16], unsigned char *len);
/* getxattrat/listxattrat (Linux 6.13); return -1 with ENOSYS on older kernels. */
ssize_t covl_getxattrat(int dirfd, const char *path, const char *name, void *value, size_t size);
ssize_t covl_listxattrat(int dirfd, const char *path, char *list, size_t size);
extern const int covl_SEEK_DATA, covl_SEEK_HOLE;
/* flock(2): Swift sees only `struct flock` under that name. */
int covl_flock(int fd, int exclusive_or_unlock);
/* flock(2) LOCK_SH or LOCK_EX, with LOCK_NB where nonblocking. */
int covl_flock_mode(int fd, int shared, int nonblocking);
/* fcntl(2) F_SETLKW (F_SETLK without wait) with F_RDLCK or F_WRLCK over the whole file. */
int covl_record_lock(int fd, int shared, int wait);
/* Inode flags (FS_IOC_GETFLAGS / FS_IOC_SETFLAGS) and the ones overlay cares about. */
int covl_get_inode_flags(int fd, unsigned int *flags);
int covl_set_inode_flags(int fd, unsigned int flags);
extern const unsigned int covl_FS_APPEND_FL, covl_FS_IMMUTABLE_FL, covl_FS_NOATIME_FL, covl_FS_SYNC_FL;
/* fstatfs(2)'s f_type (sys/vfs.h is not in Swift's Glibc module). */
int covl_fs_type(int fd, long *type);
/* "ENOENT" for ENOENT; NULL for an unknown number. */
const char *covl_errno_name(int errnum);
dev_t covl_makedev(unsigned int major, unsigned int minor);
unsigned int covl_major(dev_t dev);
unsigned int covl_minor(dev_t dev);
/* Whether the directory `dirfd` is the upper or work dir of a live overlay superblock (the
 * kernel's per-inode in-use mark): 1 yes, 0 no, -1 unknown (errno set: no fsopen, no
 * privilege, a kernel without layers given by descriptor). Nothing is mounted or written. */
int covl_overlay_dir_in_use(int dirfd);
/* Test hook: a SIGALRM every `usec` microseconds, caught without SA_RESTART (EINTR storm). */
int covl_signal_storm(long usec);

#endif
