/* fake_qemu_dtrace.c: a stand-in for a dtrace-back-end QEMU build (Fedora/RHEL style).
 *
 * Why a fake: the QEMU binaries on this host are Debian builds with the log back end only
 * (no .note.stapsdt), so no real QEMU here carries USDT probes. This program has probes
 * exactly as `dtrace -h` generates them for QEMU 10.0: provider "qemu", probe = trace
 * event name, the trace-events argument types in order (strings as char *), and an SDT
 * semaphore per probe (qemu_<event>_semaphore). Each probe fires unguarded, as QEMU's
 * generated trace_<event>() does.
 *
 * For each probe it also writes the line QEMU 10.0's log back end would print for the
 * same call ("TID@SEC.USEC:event fmt") to argv[1], so a test can compare the USDT events
 * with what the log parser makes of the log.
 * Prints "ready PID", waits for a line on stdin, fires the sequence, prints "done".
 */
#define _GNU_SOURCE
#define _SDT_HAS_SEMAPHORES 1
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sdt.h>
#include <sys/time.h>
#include <unistd.h>

#define SEM(ev) __extension__ unsigned short qemu_##ev##_semaphore \
    __attribute__((unused)) __attribute__((section(".probes")))
SEM(migrate_set_state);
SEM(vfio_migration_set_state);
SEM(vfio_state_pending_exact);
SEM(vfio_save_block);
SEM(vfio_vmstate_change);
SEM(migrate_pending_exact);
SEM(vfio_load_state_device_data);
SEM(vmstate_downtime_checkpoint);

static FILE *logf;

static void logline(const char *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void logline(const char *ev, const char *fmt, ...)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    fprintf(logf, "%d@%zu.%06zu:%s ", gettid(), (size_t)tv.tv_sec, (size_t)tv.tv_usec, ev);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(logf, fmt, ap);
    va_end(ap);
    fputc('\n', logf);
}

#define DEV "0000:00:04.0"

static void *migration_thread(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "mig/src/main");
    const char *s1 = "setup", *s2 = "active", *s3 = "device", *s4 = "completed";
    STAP_PROBE1(qemu, migrate_set_state, s1);
    logline("migrate_set_state", "new state %s", s1);
    STAP_PROBE3(qemu, vfio_migration_set_state, DEV, "PRE_COPY", "ERROR");
    logline("vfio_migration_set_state", " (%s) new state %s, recover state %s", DEV, "PRE_COPY", "ERROR");
    STAP_PROBE1(qemu, migrate_set_state, s2);
    logline("migrate_set_state", "new state %s", s2);
    for (int i = 0; i < 3; i++) {
        uint64_t pre = 3145851 - (uint64_t)i * 1048576, post = 0, stop = 1000 + i;
        uint64_t init = pre, dirty = (uint64_t)i * 4096;
        STAP_PROBE6(qemu, vfio_state_pending_exact, DEV, pre, post, stop, init, dirty);
        logline("vfio_state_pending_exact", " (%s) precopy %" PRIu64 " postcopy %" PRIu64
                " stopcopy size %" PRIu64 " precopy initial size %" PRIu64
                " precopy dirty size %" PRIu64, DEV, pre, post, stop, init, dirty);
        uint64_t size = 5000000000ULL + i, epre = 4000000000ULL, epost = 7;
        STAP_PROBE3(qemu, migrate_pending_exact, size, epre, epost);
        logline("migrate_pending_exact", "exact pending size %" PRIu64 " (pre = %" PRIu64 " post=%" PRIu64 ")",
                size, epre, epost);
        int data_size = i == 2 ? -42 : 1048576;
        STAP_PROBE2(qemu, vfio_save_block, DEV, data_size);
        logline("vfio_save_block", " (%s) data_size %d", DEV, data_size);
    }
    STAP_PROBE1(qemu, vmstate_downtime_checkpoint, "src-downtime-start");
    logline("vmstate_downtime_checkpoint", "%s", "src-downtime-start");
    int running = 0;
    STAP_PROBE4(qemu, vfio_vmstate_change, DEV, running, "finish-migrate", "STOP_COPY");
    logline("vfio_vmstate_change", " (%s) running %d reason %s device state %s", DEV, running,
            "finish-migrate", "STOP_COPY");
    STAP_PROBE1(qemu, migrate_set_state, s3);
    logline("migrate_set_state", "new state %s", s3);
    uint64_t dsize = 96;
    int ret = -5;
    STAP_PROBE3(qemu, vfio_load_state_device_data, DEV, dsize, ret);
    logline("vfio_load_state_device_data", " (%s) size %" PRIu64 " ret %d", DEV, dsize, ret);
    STAP_PROBE1(qemu, migrate_set_state, s4);
    logline("migrate_set_state", "new state %s", s4);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fake_qemu_dtrace LOGFILE\n");
        return 2;
    }
    logf = fopen(argv[1], "w");
    if (!logf)
        return 1;
    printf("ready %d\n", getpid());
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof(line), stdin))
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, migration_thread, NULL);
    pthread_join(t, NULL);
    fclose(logf);
    printf("done\n");
    fflush(stdout);
    /* stay until told to go, so the collector can drain while the pid exists */
    if (!fgets(line, sizeof(line), stdin))
        return 0;
    return 0;
}
