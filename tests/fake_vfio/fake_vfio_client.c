/* fake_vfio_client.c: QEMU's VFIO migration syscall sequence, against fake_vfio_fuse.
 *
 * Why a fake: no VFIO hardware or kernel VFIO on this host (see fake_vfio_fuse.c). The
 * ioctl/read/write/close calls on device, container and data fds follow vfio-uapi.md §5.2
 * (QEMU hw/vfio/migration.c, non-multifd pre-copy, multifd-style stop-copy threads):
 *
 *   source: GET MIGRATION, PROBE DMA_LOGGING_START; DIRTY_PAGES START on the container;
 *           save_setup per device: GET MIG_DATA_SIZE, SET PRE_COPY (new data fd),
 *           GET_PRECOPY_INFO; iterations: GET_BITMAP on the container, then per device
 *           GET MIG_DATA_SIZE + GET_PRECOPY_INFO and one read(data_fd, buf,
 *           min(1 MiB, stop_copy_size)); VM stop: SET PRE_COPY_P2P, SET STOP_COPY (same
 *           fd); complete: one thread per device reads until 0; cleanup: DIRTY_PAGES STOP,
 *           SET STOP, close(data_fd).
 *   dest:   SET RESUMING (new data fd); one thread per device writes the source's records,
 *           each split at 32 KiB QEMUFile buffer boundaries; close(data_fd); SET
 *           RUNNING_P2P; SET RUNNING.
 *
 * The only syscalls QEMU would not make: open()+dup2()+close() of a temporary fd that puts
 * the data file at the number the fake "kernel" returned in data_fd (FUSE cannot install
 * an fd in the caller). Those touch no fd the profiler tracks.
 *
 * Usage: fake_vfio_client source MNT dev[,dev...]
 *        fake_vfio_client dest   MNT dev[,dev...] RECORDS   (lines "dev bytes" from source)
 * Prints "ready PID", waits for a line on stdin (RECORDS is read only then), then runs and
 * prints one line per call. With FAKE_VFIO_PAUSE set the source prints "paused" after
 * save_setup and waits for another line (attaching in the middle of a migration). With
 * FAKE_VFIO_CANCEL_FIRST set the source first does save_setup and one iteration, then
 * what QEMU does on migrate_cancel (SET RUNNING, close(data_fd), DIRTY_PAGES STOP), prints
 * "cancelled" and runs the whole sequence again in the same process (the retry).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define VFIO_GROUP_GET_DEVICE_FD 0x3b6a
#define VFIO_DEVICE_FEATURE 0x3b75
#define VFIO_IOMMU_DIRTY_PAGES 0x3b75
#define VFIO_MIG_GET_PRECOPY_INFO 0x3b79
#define GET 0x10000
#define SET 0x20000
#define PROBE 0x40000
#define MiB (1024 * 1024)
#define IO_BUF_SIZE 32768
#define MAX_DEVS 8
#define MAX_REC 4096

struct feature16 { uint32_t argsz, flags; uint32_t state; int32_t data_fd; };
struct feature8 { uint32_t argsz, flags; };
struct precopy_info { uint32_t argsz, flags; uint64_t initial_bytes, dirty_bytes; };

struct dev {
    const char *name;
    int fd, data_fd;
    uint64_t bufsz, total;
    char *buf;
    uint64_t rec[MAX_REC];
    int nrec;
};

static struct dev devs[MAX_DEVS];
static int ndevs, container, group;
static const char *mnt;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

#define OUT(...) do { pthread_mutex_lock(&out_lock); printf(__VA_ARGS__); fflush(stdout); \
                      pthread_mutex_unlock(&out_lock); } while (0)

static void die(const char *what)
{
    fprintf(stderr, "fake_vfio_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static long set_state(struct dev *d, uint32_t state)
{
    struct feature16 f = {16, SET | 2, state, -1};
    long r = ioctl(d->fd, VFIO_DEVICE_FEATURE, &f);
    OUT("set %s %u ret=%ld data_fd=%d\n", d->name, state, r < 0 ? -(long)errno : r, f.data_fd);
    if (r < 0)
        die("SET MIG_DEVICE_STATE");
    if (f.data_fd >= 0) {
        /* put the data file where the fake kernel said it is */
        char p[4200];
        snprintf(p, sizeof(p), "%s/%s.mig", mnt, d->name);
        int tmp = open(p, state == 4 ? O_WRONLY : O_RDONLY);
        if (tmp < 0)
            die(p);
        if (dup2(tmp, f.data_fd) < 0)
            die("dup2");
        close(tmp);
        d->data_fd = f.data_fd;
    }
    return r;
}

static uint64_t data_size(struct dev *d)
{
    struct { uint32_t argsz, flags; uint64_t len; } f = {16, GET | 9, 0};
    if (ioctl(d->fd, VFIO_DEVICE_FEATURE, &f) < 0)
        die("GET MIG_DATA_SIZE");
    OUT("datasize %s %llu\n", d->name, (unsigned long long)f.len);
    return f.len;
}

static void precopy_info(struct dev *d, uint64_t *init, uint64_t *dirty)
{
    struct precopy_info pi = {24, 0, 0, 0};
    if (ioctl(d->data_fd, VFIO_MIG_GET_PRECOPY_INFO, &pi) < 0)
        die("VFIO_MIG_GET_PRECOPY_INFO");
    *init = pi.initial_bytes;
    *dirty = pi.dirty_bytes;
    OUT("precopy %s %llu %llu\n", d->name, (unsigned long long)*init, (unsigned long long)*dirty);
}

static long save_block(struct dev *d, const char *phase)
{
    ssize_t n = read(d->data_fd, d->buf, d->bufsz);
    long r = n < 0 ? -(long)errno : (long)n;
    if (n < 0 && errno != ENOMSG)
        die("read data_fd");
    if (n > 0)
        d->total += n;
    OUT("read %s %s %ld\n", d->name, phase, r);
    return r;
}

static void *stop_copy_thread(void *arg)
{
    struct dev *d = arg;
    char name[16];
    snprintf(name, sizeof(name), "mig/src/send_%d", (int)(d - devs));
    pthread_setname_np(pthread_self(), name);
    while (save_block(d, "STOP_COPY") > 0)
        ;
    return NULL;
}

static void dirty_pages(uint32_t flags)
{
    struct feature8 f = {8, flags};
    long r = ioctl(container, VFIO_IOMMU_DIRTY_PAGES, &f);
    OUT("dirty_pages %u ret=%ld\n", flags, r < 0 ? -(long)errno : r);
}

static int cancelled;

static void *source_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "mig/src/main");
    dirty_pages(1); /* START */
    for (int i = 0; i < ndevs; i++) {
        struct dev *d = &devs[i];
        uint64_t sc = data_size(d), init, dirty;
        d->bufsz = sc < MiB ? sc : MiB;
        d->buf = malloc(d->bufsz);
        set_state(d, 6); /* PRE_COPY: new data fd */
        precopy_info(d, &init, &dirty);
    }
    if (getenv("FAKE_VFIO_PAUSE")) {
        /* let a profiler attach in the middle of the migration */
        char line[16];
        OUT("paused\n");
        if (!fgets(line, sizeof(line), stdin))
            exit(1);
    }
    if (getenv("FAKE_VFIO_CANCEL_FIRST") && !cancelled) {
        cancelled = 1;
        dirty_pages(4); /* one iteration */
        for (int i = 0; i < ndevs; i++) {
            uint64_t init, dirty;
            data_size(&devs[i]);
            precopy_info(&devs[i], &init, &dirty);
            save_block(&devs[i], "PRE_COPY");
        }
        for (int i = 0; i < ndevs; i++) {
            set_state(&devs[i], 2); /* migration state notifier on cancel: RUNNING */
            close(devs[i].data_fd); /* save_cleanup */
            OUT("close %s %d\n", devs[i].name, devs[i].data_fd);
            devs[i].total = 0;
        }
        dirty_pages(2); /* STOP */
        OUT("cancelled\n");
        return source_thread(arg); /* the retry, from save_setup on */
    }
    for (int it = 0; it < 200; it++) {
        int drained = 0;
        dirty_pages(4); /* GET_BITMAP */
        for (int i = 0; i < ndevs; i++) {
            struct dev *d = &devs[i];
            uint64_t init, dirty;
            data_size(d);
            precopy_info(d, &init, &dirty);
            long r = save_block(d, "PRE_COPY");
            if (init + dirty == 0 && r <= 0)
                drained++;
        }
        if (drained == ndevs)
            break;
    }
    for (int i = 0; i < ndevs; i++)
        set_state(&devs[i], 7); /* vmstate_change_prepare: PRE_COPY_P2P */
    for (int i = 0; i < ndevs; i++)
        set_state(&devs[i], 3); /* vmstate_change: STOP_COPY, same fd */
    pthread_t th[MAX_DEVS];
    for (int i = 0; i < ndevs; i++)
        pthread_create(&th[i], NULL, stop_copy_thread, &devs[i]);
    for (int i = 0; i < ndevs; i++)
        pthread_join(th[i], NULL);
    dirty_pages(2); /* STOP */
    for (int i = 0; i < ndevs; i++) {
        set_state(&devs[i], 1); /* save_cleanup: STOP */
        close(devs[i].data_fd);
        OUT("close %s %d\n", devs[i].name, devs[i].data_fd);
        OUT("total %s %llu\n", devs[i].name, (unsigned long long)devs[i].total);
    }
    return NULL;
}

static void *load_thread(void *arg)
{
    struct dev *d = arg;
    char name[16];
    snprintf(name, sizeof(name), "mig/dst/load_%d", (int)(d - devs));
    pthread_setname_np(pthread_self(), name);
    char *buf = malloc(IO_BUF_SIZE);
    memset(buf, 0x5a, IO_BUF_SIZE);
    uint64_t off = 24; /* where the record payload starts in the QEMUFile buffer */
    for (int r = 0; r < d->nrec; r++) {
        uint64_t left = d->rec[r];
        off += 16; /* be64 DEV_DATA_STATE, be64 size */
        while (left) {
            uint64_t room = IO_BUF_SIZE - (off % IO_BUF_SIZE);
            uint64_t n = left < room ? left : room;
            ssize_t w = write(d->data_fd, buf, n);
            OUT("write %s RESUMING %ld\n", d->name, w < 0 ? -(long)errno : (long)w);
            if (w <= 0)
                die("write data_fd");
            left -= w;
            off += w;
            d->total += w;
        }
    }
    free(buf);
    return NULL;
}

static void open_devices(void)
{
    char p[4200];
    snprintf(p, sizeof(p), "%s/vfio", mnt);
    if ((container = open(p, O_RDWR)) < 0)
        die(p);
    snprintf(p, sizeof(p), "%s/group", mnt);
    if ((group = open(p, O_RDWR)) < 0)
        die(p);
    for (int i = 0; i < ndevs; i++) {
        struct dev *d = &devs[i];
        snprintf(p, sizeof(p), "%s/%s", mnt, d->name);
        if (open(p, O_RDWR) < 0)
            die(p);
        /* QEMU's vfio_device_get: the group hands out the device fd by name */
        d->fd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, d->name);
        if (d->fd < 0)
            die("VFIO_GROUP_GET_DEVICE_FD");
        struct { uint32_t argsz, flags; uint64_t mig; } m = {16, GET | 1, 0};
        if (ioctl(d->fd, VFIO_DEVICE_FEATURE, &m) < 0)
            die("GET MIGRATION");
        struct feature8 pr = {8, PROBE | 6};
        long r = ioctl(d->fd, VFIO_DEVICE_FEATURE, &pr);
        OUT("device %s fd=%d mig_flags=%llu probe=%ld\n", d->name, d->fd,
            (unsigned long long)m.mig, r);
    }
    OUT("container fd=%d group fd=%d\n", container, group);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fake_vfio_client source|dest MNT dev[,dev...] [RECORDS]\n");
        return 2;
    }
    int source = !strcmp(argv[1], "source");
    mnt = argv[2];
    for (char *s = strdup(argv[3]), *tok; (tok = strsep(&s, ",")) && ndevs < MAX_DEVS;)
        devs[ndevs++].name = tok;
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof(line), stdin))
        return 1;
    if (!source) {
        FILE *f = fopen(argv[4], "r");
        char name[64];
        unsigned long long n;
        if (!f)
            die(argv[4]);
        while (fscanf(f, "%63s %llu", name, &n) == 2)
            for (int i = 0; i < ndevs; i++)
                if (!strcmp(devs[i].name, name) && devs[i].nrec < MAX_REC)
                    devs[i].rec[devs[i].nrec++] = n;
        fclose(f);
    }
    open_devices();
    if (source) {
        pthread_t t;
        pthread_create(&t, NULL, source_thread, NULL);
        pthread_join(t, NULL);
    } else {
        for (int i = 0; i < ndevs; i++)
            set_state(&devs[i], 4); /* load_setup: RESUMING, new data fd */
        pthread_t th[MAX_DEVS];
        for (int i = 0; i < ndevs; i++)
            pthread_create(&th[i], NULL, load_thread, &devs[i]);
        for (int i = 0; i < ndevs; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < ndevs; i++) {
            close(devs[i].data_fd); /* load_cleanup */
            OUT("close %s %d\n", devs[i].name, devs[i].data_fd);
            set_state(&devs[i], 5); /* RUNNING_P2P */
            set_state(&devs[i], 2); /* RUNNING */
            OUT("total %s %llu\n", devs[i].name, (unsigned long long)devs[i].total);
        }
    }
    OUT("done\n");
    return 0;
}
