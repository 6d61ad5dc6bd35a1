/* fake_vfio_fuse.c: a FUSE test double of VFIO devices with migration support.
 *
 * Why a fake: this host has no VFIO hardware and its kernel has no VFIO, so nothing real
 * answers VFIO ioctls here. This file system puts files where the profiler's BPF programs
 * see the REAL syscall path (ioctl/read/write/close tracepoints of the caller):
 *
 *   MNT/vfio          a "container": answers VFIO_IOMMU_DIRTY_PAGES (0x3b75, flags 1/2/4)
 *   MNT/group         a "group": VFIO_GROUP_GET_DEVICE_FD (0x3b6a) with a device name
 *                     returns the caller's fd already open on MNT/<name>
 *   MNT/<name>        a device: VFIO_DEVICE_FEATURE (0x3b75) MIGRATION, MIG_DEVICE_STATE,
 *                     MIG_DATA_SIZE, DMA_LOGGING_*; VFIO_DEVICE_RESET
 *   MNT/<name>.mig    its migration data file: VFIO_MIG_GET_PRECOPY_INFO (0x3b79), read()
 *                     on the save side, write() on the resume side
 *
 * VFIO commands are _IO() (no size), so FUSE passes no argument bytes: the server reads
 * and writes the caller's struct through /proc/TID/mem (FUSE tells it the caller's tid;
 * needs root). A SET that starts a data session cannot install an fd in the caller, so
 * the server picks the number (DATA_FD_BASE + 8*device + session%8) and writes it at
 * arg+12 as the kernel would; the client opens MNT/<name>.mig and dup2()s it there.
 *
 * Data semantics (vfio-uapi.md §4): mode "mtty": PRE_COPY stream = init bytes, dirty
 * always 0, temporary end read() = 0. Mode "mlx5": after the initial bytes are read, each
 * GET_PRECOPY_INFO on a drained stream queues `dirty` more bytes (`rounds` times),
 * temporary end read() = -ENOMSG. PRE_COPY_P2P/PRE_COPY -> STOP_COPY appends the stop-copy
 * bytes to the same stream; reads then end with 0 for good. Leaving the saving group
 * disables the file (-ENODEV).
 *
 * Devices come from FAKE_VFIO_DEVS="name,mode,init,dirty,rounds,stopcopy;...".
 * Run: fake_vfio_fuse MNT -f -s (see tests/test_bpf_fake_vfio.py).
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEVS 8
#define DATA_FD_BASE 100

enum { ST_ERROR, ST_STOP, ST_RUNNING, ST_STOP_COPY, ST_RESUMING, ST_RUNNING_P2P,
       ST_PRE_COPY, ST_PRE_COPY_P2P };

struct dev {
    char name[64];
    int mlx5; /* 0: mtty semantics, 1: mlx5 semantics */
    uint64_t init, dirty, stopcopy;
    int rounds, rounds_left;
    uint32_t state;
    int sessions;
    int session_live; /* a save or resume session is open */
    int saving;       /* 1 save, 0 resume */
    uint64_t filled, pos, written;
};

static struct dev devs[MAX_DEVS];
static int ndevs;
static char mnt[4096];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static int mem_io(pid_t tid, uint64_t addr, void *buf, size_t len, int write)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/mem", tid);
    int fd = open(path, write ? O_WRONLY : O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = write ? pwrite(fd, buf, len, (off_t)addr) : pread(fd, buf, len, (off_t)addr);
    int err = errno;
    close(fd);
    return n == (ssize_t)len ? 0 : (n < 0 ? -err : -EFAULT);
}

/* which file: -1 root, -2 container, -3 group, 0..n-1 device, 100+i data file of device i */
static int lookup(const char *path)
{
    if (!strcmp(path, "/"))
        return -1;
    if (!strcmp(path, "/vfio"))
        return -2;
    if (!strcmp(path, "/group"))
        return -3;
    for (int i = 0; i < ndevs; i++) {
        size_t l = strlen(devs[i].name);
        if (!strncmp(path + 1, devs[i].name, l)) {
            if (path[1 + l] == 0)
                return i;
            if (!strcmp(path + 1 + l, ".mig"))
                return 100 + i;
        }
    }
    return -100;
}

static int fv_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    (void)fi;
    int w = lookup(path);
    memset(st, 0, sizeof(*st));
    if (w == -100)
        return -ENOENT;
    if (w == -1) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0600;
        st->st_nlink = 1;
    }
    return 0;
}

static int fv_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off; (void)fi; (void)flags;
    if (strcmp(path, "/"))
        return -ENOENT;
    fill(buf, ".", NULL, 0, 0);
    fill(buf, "..", NULL, 0, 0);
    fill(buf, "vfio", NULL, 0, 0);
    fill(buf, "group", NULL, 0, 0);
    for (int i = 0; i < ndevs; i++) {
        char n[80];
        fill(buf, devs[i].name, NULL, 0, 0);
        snprintf(n, sizeof(n), "%.63s.mig", devs[i].name);
        fill(buf, n, NULL, 0, 0);
    }
    return 0;
}

static int fv_open(const char *path, struct fuse_file_info *fi)
{
    if (lookup(path) == -100)
        return -ENOENT;
    fi->direct_io = 1;    /* every read/write reaches us: no page cache */
    fi->nonseekable = 1;  /* data files are streams, like stream_open() */
    return 0;
}

static int fv_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)path; (void)size; (void)fi;
    return 0;
}

static void fill_pattern(char *buf, size_t len, uint64_t pos)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (char)((pos + i) * 131u);
}

static int fv_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)off; (void)fi;
    int w = lookup(path);
    if (w < 100)
        return -EINVAL;
    struct dev *d = &devs[w - 100];
    pthread_mutex_lock(&lock);
    int ret;
    if (!d->session_live || !d->saving) {
        ret = -ENODEV;
    } else if (d->pos >= d->filled) {
        /* temporary end in PRE_COPY: mtty says 0, mlx5 -ENOMSG; STOP_COPY end: 0 */
        int pre = d->state == ST_PRE_COPY || d->state == ST_PRE_COPY_P2P;
        ret = (pre && d->mlx5) ? -ENOMSG : 0;
    } else {
        uint64_t n = d->filled - d->pos;
        if (n > size)
            n = size;
        fill_pattern(buf, n, d->pos);
        d->pos += n;
        ret = (int)n;
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

static int fv_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)buf; (void)off; (void)fi;
    int w = lookup(path);
    if (w < 100)
        return -EINVAL;
    struct dev *d = &devs[w - 100];
    pthread_mutex_lock(&lock);
    int ret;
    if (!d->session_live || d->saving || d->state != ST_RESUMING) {
        ret = -ENODEV;
    } else {
        d->written += size;
        ret = (int)size;
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

static int in_saving_group(uint32_t s)
{
    return s == ST_PRE_COPY || s == ST_PRE_COPY_P2P || s == ST_STOP_COPY;
}

/* SET MIG_DEVICE_STATE: returns the new data fd number or -1; <-1 is -errno - 1000 */
static int set_state(struct dev *d, int idx, uint32_t new)
{
    uint32_t cur = d->state;
    int data_fd = -1;
    if (new == ST_ERROR || new > ST_PRE_COPY_P2P)
        return -EINVAL - 1000;
    if (cur == ST_STOP_COPY && (new == ST_PRE_COPY || new == ST_PRE_COPY_P2P))
        return -EINVAL - 1000;
    if (!in_saving_group(cur) && in_saving_group(new)) {
        d->sessions++;
        d->session_live = 1;
        d->saving = 1;
        d->pos = d->filled = 0;
        d->rounds_left = d->rounds;
        d->filled = new == ST_STOP_COPY ? d->init + d->stopcopy : d->init;
        data_fd = DATA_FD_BASE + 8 * idx + (d->sessions % 8);
    } else if (in_saving_group(cur) && new == ST_STOP_COPY && cur != ST_STOP_COPY) {
        d->filled += d->stopcopy; /* same session, stop-copy data appended */
    } else if (in_saving_group(cur) && !in_saving_group(new)) {
        d->session_live = 0; /* session ends; the file is disabled */
    }
    if (new == ST_RESUMING && cur != ST_RESUMING) {
        d->sessions++;
        d->session_live = 1;
        d->saving = 0;
        d->written = 0;
        data_fd = DATA_FD_BASE + 8 * idx + (d->sessions % 8);
    } else if (cur == ST_RESUMING && new != ST_RESUMING) {
        d->session_live = 0;
    }
    d->state = new;
    return data_fd;
}

static int device_ioctl(int idx, pid_t tid, uint64_t arg)
{
    struct dev *d = &devs[idx];
    uint32_t hdr[4] = {0};
    if (mem_io(tid, arg, hdr, 8, 0))
        return -EFAULT;
    uint32_t argsz = hdr[0], flags = hdr[1], feature = flags & 0xffff;
    if (argsz < 8 || (flags & ~0x7ffffu))
        return -EINVAL;
    if (flags & 0x40000)
        return feature <= 9 ? 0 : -ENOTTY; /* PROBE */
    if (feature == 1 && (flags & 0x10000)) {
        uint64_t mig = 7; /* STOP_COPY | P2P | PRE_COPY */
        return mem_io(tid, arg + 8, &mig, 8, 1);
    }
    if (feature == 9 && (flags & 0x10000)) {
        uint64_t len = d->stopcopy + (d->state == ST_RUNNING ? d->init : 0);
        if (len == 0)
            len = d->stopcopy;
        return mem_io(tid, arg + 8, &len, 8, 1);
    }
    if (feature == 2) {
        if (argsz < 16)
            return -EINVAL;
        if (flags & 0x10000) {
            int32_t st[2] = {(int32_t)d->state, -1};
            return mem_io(tid, arg + 8, st, 8, 1);
        }
        if (mem_io(tid, arg + 8, &hdr[2], 4, 0))
            return -EFAULT;
        int fd = set_state(d, idx, hdr[2]);
        int32_t out = fd < -1 ? -1 : fd;
        mem_io(tid, arg + 12, &out, 4, 1); /* the kernel writes -1 on failure too */
        return fd < -1 ? fd + 1000 : 0;
    }
    if (feature >= 6 && feature <= 8)
        return 0; /* DMA logging: a stub, like mtty */
    return -ENOTTY;
}

static int group_get_device_fd(pid_t tid, uint64_t arg)
{
    char name[64] = {0};
    if (mem_io(tid, arg, name, sizeof(name) - 1, 0)) {
        /* the string may sit near the end of a mapping: read byte by byte */
        for (size_t i = 0; i < sizeof(name) - 1; i++)
            if (mem_io(tid, arg + i, name + i, 1, 0) || !name[i])
                break;
    }
    char want[4200], dir[64], link[4200];
    snprintf(want, sizeof(want), "%s/%s", mnt, name);
    snprintf(dir, sizeof(dir), "/proc/%d/fd", tid);
    for (int fd = 0; fd < 1024; fd++) {
        char p[80];
        snprintf(p, sizeof(p), "%s/%d", dir, fd);
        ssize_t n = readlink(p, link, sizeof(link) - 1);
        if (n <= 0)
            continue;
        link[n] = 0;
        if (!strcmp(link, want))
            return fd;
    }
    return -ENODEV;
}

static int fv_ioctl(const char *path, unsigned int cmd, void *arg, struct fuse_file_info *fi,
                    unsigned int flags, void *data)
{
    (void)fi; (void)flags; (void)data;
    pid_t tid = fuse_get_context()->pid;
    uint64_t a = (uint64_t)(uintptr_t)arg;
    int w = lookup(path);
    int ret;
    pthread_mutex_lock(&lock);
    if (w == -2 && cmd == 0x3b75) {
        uint32_t hdr[2];
        ret = mem_io(tid, a, hdr, 8, 0);
        if (!ret && (hdr[1] == 0 || hdr[1] > 4))
            ret = -EINVAL;
    } else if (w == -3 && cmd == 0x3b6a) {
        ret = group_get_device_fd(tid, a);
    } else if (w >= 0 && w < 100 && cmd == 0x3b75) {
        ret = device_ioctl(w, tid, a);
    } else if (w >= 0 && w < 100 && cmd == 0x3b6f) {
        devs[w].state = ST_RUNNING;
        devs[w].session_live = 0;
        ret = 0;
    } else if (w >= 100 && cmd == 0x3b79) {
        struct dev *d = &devs[w - 100];
        uint32_t hdr[2];
        ret = mem_io(tid, a, hdr, 8, 0);
        if (!ret && hdr[0] < 24)
            ret = -EINVAL;
        else if (!ret && !(d->saving && d->session_live &&
                           (d->state == ST_PRE_COPY || d->state == ST_PRE_COPY_P2P)))
            ret = -EINVAL;
        else if (!ret) {
            if (d->mlx5 && d->pos >= d->filled && d->pos >= d->init && d->rounds_left > 0) {
                d->filled += d->dirty; /* the device dirtied more state */
                d->rounds_left--;
            }
            uint64_t init = d->pos < d->init ? d->init - d->pos : 0;
            uint64_t base = d->pos > d->init ? d->pos : d->init;
            uint64_t dirty = d->filled > base ? d->filled - base : 0;
            uint64_t out[2] = {init, dirty};
            /* v1: flags are not touched (they echo the caller's input) */
            ret = mem_io(tid, a + 8, out, 16, 1);
        }
    } else {
        ret = -ENOTTY;
    }
    pthread_mutex_unlock(&lock);
    return ret;
}

static const struct fuse_operations ops = {
    .getattr = fv_getattr,
    .readdir = fv_readdir,
    .open = fv_open,
    .truncate = fv_truncate,
    .read = fv_read,
    .write = fv_write,
    .ioctl = fv_ioctl,
};

int main(int argc, char **argv)
{
    const char *spec = getenv("FAKE_VFIO_DEVS");
    if (!spec) {
        fprintf(stderr, "FAKE_VFIO_DEVS not set\n");
        return 2;
    }
    char *s = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(s, ";", &save); tok && ndevs < MAX_DEVS; tok = strtok_r(NULL, ";", &save)) {
        struct dev *d = &devs[ndevs];
        char mode[16];
        unsigned long long init, dirty, stop;
        if (sscanf(tok, "%63[^,],%15[^,],%llu,%llu,%d,%llu", d->name, mode, &init, &dirty,
                   &d->rounds, &stop) != 6) {
            fprintf(stderr, "bad device spec: %s\n", tok);
            return 2;
        }
        d->mlx5 = !strcmp(mode, "mlx5");
        d->init = init;
        d->dirty = dirty;
        d->stopcopy = stop;
        d->state = ST_RUNNING;
        ndevs++;
    }
    /* the mount point comes first: fake_vfio_fuse MNT [fuse options] */
    if (argc < 2 || !realpath(argv[1], mnt)) {
        fprintf(stderr, "usage: fake_vfio_fuse MNT [-f -s ...]\n");
        return 2;
    }
    return fuse_main(argc, argv, &ops, NULL);
}
