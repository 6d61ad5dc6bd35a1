/* vfio.h: constants and the event record shared by migprof's VFIO BPF programs.
 *
 * Included by vfio_syscalls.bpf.c (tracepoints) and vfio_kprobes.bpf.c (kprobes);
 * profiler/sources/bpf.py mirrors struct vfio_event with ctypes. Numbers come from
 * the VFIO uAPI (vfio-uapi.md §1-2); they are hard-coded on purpose because the
 * build host's <linux/vfio.h> (6.1) lacks PRE_COPY, MIG_DATA_SIZE and the precopy
 * ioctl.
 */
#ifndef MIGPROF_VFIO_H
#define MIGPROF_VFIO_H

/* ioctl numbers: _IO(';', 100 + n), no size or direction bits */
#define VFIO_GROUP_GET_DEVICE_FD   0x3b6a
#define VFIO_DEVICE_RESET          0x3b6f
#define VFIO_DEVICE_FEATURE        0x3b75 /* == VFIO_IOMMU_DIRTY_PAGES on a container fd */
#define VFIO_MIG_GET_PRECOPY_INFO  0x3b79 /* on the migration data fd */

#define FEATURE_MASK   0xffff
#define FEATURE_GET    0x10000
#define FEATURE_SET    0x20000
#define FEATURE_PROBE  0x40000
#define FEATURE_MIGRATION         1
#define FEATURE_MIG_DEVICE_STATE  2
#define FEATURE_MIG_DATA_SIZE     9

#define STATE_STOP_COPY   3
#define STATE_RESUMING    4

/* fd kinds, as learned in the kernel or told by the /proc scan at attach */
#define FD_UNKNOWN    0
#define FD_DEVICE     1
#define FD_CONTAINER  2
#define FD_DATA_SAVE  3
#define FD_DATA_LOAD  4
#define FD_GROUP      5
#define FD_IOMMUFD    6

/* event types */
#define EV_IOCTL    1 /* VFIO_DEVICE_FEATURE on a device fd */
#define EV_PRECOPY  2 /* VFIO_MIG_GET_PRECOPY_INFO on a data fd */
#define EV_READ     3 /* read() on a save data fd */
#define EV_WRITE    4 /* write() on a resume data fd */
#define EV_CLOSE    5 /* close() of a device or data fd */
#define EV_DEVNAME  6 /* VFIO_GROUP_GET_DEVICE_FD: device name -> new device fd */
#define EV_RESET    7 /* VFIO_DEVICE_RESET on a device fd */
#define EV_DIRTY    8 /* VFIO_IOMMU_DIRTY_PAGES on a container fd (same number as FEATURE) */

#define NAME_LEN 40

/* key of the fd table: fds are per process, so the tgid is part of the key */
struct fd_key {
    u32 tgid;
    s32 fd;
};

/* what migprof knows about one fd */
struct fd_info {
    u8 kind;        /* FD_* */
    u8 state_known; /* device fds: state holds a confirmed device state */
    u16 pad;
    u32 state;      /* device fds: last successful SET (or GET) device state */
    s32 owner;      /* data fds: the device fd whose SET returned it */
    u32 pad2;
};

/* one syscall in flight, keyed by pid_tgid between enter and exit */
struct inflight {
    u64 ts_ns;
    u64 arg;        /* ioctl arg pointer */
    u64 count;      /* read/write count */
    s32 fd;
    u32 cmd;
    u32 flags;      /* feature flags read at enter */
    u32 req_state;  /* requested device state read at enter */
    u8 kind;
    u8 type;        /* EV_* to emit at exit */
    u8 arg_ok;      /* the enter-time read of *arg succeeded */
    u8 pad[5];
};

/* the record that leaves through the ring (or perf) buffer: 112 bytes */
struct vfio_event {
    u64 ts_ns;      /* bpf_ktime_get_ns() at syscall exit (enter for close) */
    u64 dur_ns;     /* enter -> exit */
    u64 a;          /* bytes moved, stop_copy_length, initial_bytes or mig flags */
    u64 b;          /* requested count or dirty_bytes */
    s64 ret;
    u32 tgid;
    u32 tid;
    s32 fd;
    s32 aux_fd;     /* data events: owning device fd; ioctl: returned data_fd */
    u32 cmd;
    u32 flags;      /* feature flags or precopy flags */
    u32 state;      /* ioctl: requested/confirmed state; data: phase of the owner */
    u8 type;        /* EV_* */
    u8 kind;        /* FD_* of fd */
    u8 arg_ok;      /* every user-memory read for this event succeeded */
    u8 state_known; /* data events: the owner's phase is known */
    char comm[16];
    char name[NAME_LEN]; /* EV_DEVNAME: device name */
};

/* ---- helpers both programs share --------------------------------------------------
 * They touch no map: bcc turns map calls (m.lookup() and the like) into BPF only in the
 * main .bpf.c file, not in an included header. Map values come in as plain pointers.
 */

/* VFIO_DEVICE_FEATURE at entry: argsz, flags, then the MIG_DEVICE_STATE payload's first
 * word (the requested state). A header at the end of a page may only be 8 bytes long. */
static __always_inline void read_feature_hdr(struct inflight *in, u64 arg)
{
    u32 hdr[4] = {};
    in->arg_ok = bpf_probe_read_user(hdr, sizeof(hdr), (void *)arg) == 0;
    if (!in->arg_ok)
        in->arg_ok = bpf_probe_read_user(hdr, 8, (void *)arg) == 0;
    in->flags = hdr[1];
    in->req_state = hdr[2];
}

/* the fields every event takes from its syscall's entry record */
static __always_inline void start_exit_event(struct vfio_event *ev, const struct inflight *c,
                                             long ret, u64 now)
{
    ev->ts_ns = now;
    ev->dur_ns = now - c->ts_ns;
    ev->ret = ret;
    ev->fd = c->fd;
    ev->aux_fd = -1;
    ev->cmd = c->cmd;
    ev->flags = c->flags;
    ev->kind = c->kind;
    ev->arg_ok = c->arg_ok;
}

/* A successful VFIO_DEVICE_FEATURE GET/SET: read the payload after the 8-byte header into
 * the event, and update the device's phase (dev, may be NULL). Returns the data fd a SET
 * of MIG_DEVICE_STATE handed out (for the caller to remember), else -1. */
static __always_inline s32 feature_result(struct vfio_event *ev, const struct inflight *c,
                                          struct fd_info *dev)
{
    u32 feature = c->flags & FEATURE_MASK;
    u64 payload = 0;
    if (bpf_probe_read_user(&payload, sizeof(payload), (void *)(c->arg + 8)) != 0) {
        ev->arg_ok = 0;
        return -1;
    }
    if (feature == FEATURE_MIG_DEVICE_STATE) {
        u32 st = (u32)payload;
        s32 data_fd = (s32)(payload >> 32);
        if (c->flags & FEATURE_GET)
            ev->state = st;
        ev->aux_fd = data_fd;
        if (dev) {
            dev->state = ev->state;
            dev->state_known = 1;
        }
        return (c->flags & FEATURE_SET) && data_fd >= 0 ? data_fd : -1;
    }
    if (feature == FEATURE_MIG_DATA_SIZE || feature == FEATURE_MIGRATION)
        ev->a = payload; /* stop_copy_length, or the migration flags */
    return -1;
}

/* VFIO_MIG_GET_PRECOPY_INFO's answer: argsz/flags, initial_bytes, dirty_bytes */
static __always_inline void read_precopy_info(struct vfio_event *ev, u64 arg)
{
    u64 pi[3] = {};
    if (bpf_probe_read_user(pi, sizeof(pi), (void *)arg) == 0) {
        ev->flags = (u32)(pi[0] >> 32);
        ev->a = pi[1];
        ev->b = pi[2];
    } else {
        ev->arg_ok = 0;
    }
}

#endif /* MIGPROF_VFIO_H */
