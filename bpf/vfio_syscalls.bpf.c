/* vfio_syscalls.bpf.c: VFIO migration ioctls and data-fd I/O seen at the syscall tracepoints.
 *
 * Attach points: syscalls:sys_enter/exit_ioctl, sys_enter/exit_read, sys_enter/exit_write,
 *                sys_enter_close (bcc TRACEPOINT_PROBE; needs tracefs and kernel headers).
 * Maps:          targets  (tgid -> slot, when TARGET_TGID is 0: several processes, added
 *                         and removed at run time by the loader: a new target costs no
 *                         compile and no attach)
 *                fds      (tgid, fd) -> fd_info: device, container and data fds, and the
 *                         phase (last successful device state) of each device fd
 *                fdkind   array [slot * MAX_FDS + fd] -> fd kind: the cheap first test
 *                pending  array [tid & PENDING_MASK] -> tid with a record in inflight
 *                inflight pid_tgid -> inflight: one syscall between enter and exit
 *                last_dev pid_tgid -> device fd of the thread's last MIG_DATA_SIZE query
 *                events   ring buffer (perf buffer when USE_RINGBUF is 0) of vfio_event
 *                drops    per-CPU count of records the buffer refused
 * Event:         struct vfio_event in vfio.h.
 * Kernel:        5.5+ (bpf_probe_read_user), 5.8+ for the ring buffer.
 *
 * Cost for everything else: each enter probe returns after one tgid test for other
 * processes (a compare with TARGET_TGID, else one lookup in targets); in a target, ioctls
 * other than the VFIO numbers return after a compare, reads/writes/closes after one array
 * load (fdkind); every exit returns after one array load (pending), which only a target's
 * VFIO syscall sets. Other hash maps are only touched for VFIO fds.
 */
#include <uapi/linux/ptrace.h>
#include "vfio.h"

#ifndef TARGET_TGID
#define TARGET_TGID 0 /* 0: trace every tgid in the targets map */
#endif
#ifndef USE_RINGBUF
#define USE_RINGBUF 1
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256 /* 1 MiB */
#endif
#ifndef MAX_FDS
#define MAX_FDS 8192 /* fds above this go to the hash map directly */
#endif
#ifndef MAX_TARGETS
#define MAX_TARGETS 64 /* slots of fdkind: processes traced at once */
#endif
#define PENDING_MASK 0xffff
#define KIND_SLOW 0xff

BPF_HASH(targets, u32, u32, MAX_TARGETS);
BPF_ARRAY(fdkind, u8, MAX_TARGETS * MAX_FDS);
BPF_ARRAY(pending, u32, PENDING_MASK + 1);
BPF_HASH(fds, struct fd_key, struct fd_info, MAX_FDS);
BPF_HASH(inflight, u64, struct inflight, 4096);
BPF_HASH(last_dev, u64, s32, 4096); /* pid_tgid -> device fd of its last MIG_DATA_SIZE */
BPF_PERCPU_ARRAY(drops, u64, 1);
BPF_PERCPU_ARRAY(scratch, struct vfio_event, 1);
#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif

/* the target's slot in fdkind, or -1 for any other process */
static __always_inline int target_slot(u32 tgid)
{
#if TARGET_TGID
    return tgid == TARGET_TGID ? 0 : -1;
#else
    u32 *slot = targets.lookup(&tgid);
    return slot && *slot < MAX_TARGETS ? (int)*slot : -1;
#endif
}

static __always_inline int is_target(u32 tgid)
{
    return target_slot(tgid) >= 0;
}

/* kind of an fd from the array: 0 = nothing of ours, KIND_SLOW = ask the hash map */
static __always_inline u8 fast_kind(int slot, int fd)
{
    if (fd < 0)
        return 0;
    if (fd >= MAX_FDS)
        return KIND_SLOW;
    u32 idx = slot * MAX_FDS + fd;
    u8 *k = fdkind.lookup(&idx);
    return k ? *k : 0;
}

static __always_inline void set_kind(u32 tgid, int fd, u8 kind)
{
    int slot = target_slot(tgid);
    if (slot < 0 || fd < 0 || fd >= MAX_FDS)
        return;
    u32 idx = slot * MAX_FDS + fd;
    fdkind.update(&idx, &kind);
}

static __always_inline void fds_put(u32 tgid, int fd, struct fd_info *fi)
{
    struct fd_key k = {.tgid = tgid, .fd = fd};
    fds.update(&k, fi);
    set_kind(tgid, fd, fi->kind);
}

/* mark/clear "this thread has a record in inflight" */
static __always_inline void pending_set(u64 pid_tgid, struct inflight *in)
{
    u32 tid = (u32)pid_tgid;
    u32 idx = tid & PENDING_MASK;
    inflight.update(&pid_tgid, in);
    pending.update(&idx, &tid);
}

static __always_inline int pending_take(u64 pid_tgid)
{
    u32 tid = (u32)pid_tgid;
    u32 idx = tid & PENDING_MASK;
    u32 *p = pending.lookup(&idx);
    if (!p || *p != tid)
        return 0;
    *p = 0;
    return 1;
}

static __always_inline void count_drop(void)
{
    int zero = 0;
    u64 *d = drops.lookup(&zero);
    if (d)
        (*d)++;
}

/* Send one event; a full buffer is counted, never silent. */
static __always_inline void emit(void *ctx, struct vfio_event *ev)
{
#if USE_RINGBUF
    if (events.ringbuf_output(ev, sizeof(*ev), 0) != 0)
        count_drop();
#else
    if (events.perf_submit(ctx, ev, sizeof(*ev)) != 0)
        count_drop();
#endif
}

static __always_inline struct vfio_event *new_event(u64 pid_tgid, u8 type)
{
    int zero = 0;
    struct vfio_event *ev = scratch.lookup(&zero);
    if (!ev)
        return NULL;
    __builtin_memset(ev, 0, sizeof(*ev));
    ev->tgid = pid_tgid >> 32;
    ev->tid = (u32)pid_tgid;
    ev->type = type;
    bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
    return ev;
}

/* take this thread's entry record out of inflight (0: it has none). Only a target's
 * enter probe marks pending, so that array load is the whole test for everyone else. */
static __always_inline int take_inflight(u64 pid_tgid, struct inflight *c)
{
    if (!pending_take(pid_tgid))
        return 0;
    struct inflight *in = inflight.lookup(&pid_tgid);
    if (!in)
        return 0;
    *c = *in;
    inflight.delete(&pid_tgid);
    return 1;
}

/* ---- ioctl ------------------------------------------------------------------ */

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
    /* the command first: it costs no helper call, and most ioctls are not VFIO's */
    u32 cmd = (u32)args->cmd;
    if (cmd != VFIO_DEVICE_FEATURE && cmd != VFIO_MIG_GET_PRECOPY_INFO &&
        cmd != VFIO_GROUP_GET_DEVICE_FD && cmd != VFIO_DEVICE_RESET)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;

    struct fd_key key = {.tgid = tgid, .fd = (int)args->fd};
    struct fd_info *fi = fds.lookup(&key);
    u8 kind = fi ? fi->kind : FD_UNKNOWN;
    struct inflight in = {};
    in.ts_ns = bpf_ktime_get_ns();
    in.arg = args->arg;
    in.fd = key.fd;
    in.cmd = cmd;
    in.kind = kind;

    if (cmd == VFIO_DEVICE_FEATURE) {
        read_feature_hdr(&in, args->arg);
        if (kind == FD_CONTAINER || kind == FD_GROUP || kind == FD_IOMMUFD) {
            in.type = EV_DIRTY; /* VFIO_IOMMU_DIRTY_PAGES: the 0x3b75 collision */
        } else if (kind == FD_DEVICE) {
            in.type = EV_IOCTL;
        } else if (kind == FD_UNKNOWN && in.arg_ok) {
            /* not seen at the scan: a feature call always has GET, SET or PROBE set,
             * DIRTY_PAGES only START/STOP/GET_BITMAP (1/2/4) */
            if (in.flags & (FEATURE_GET | FEATURE_SET | FEATURE_PROBE)) {
                in.type = EV_IOCTL;
                in.kind = FD_DEVICE;
            } else if (in.flags && in.flags <= 7) {
                in.type = EV_DIRTY;
                in.kind = FD_CONTAINER;
            } else {
                return 0;
            }
        } else {
            return 0; /* a data fd or unreadable arg: not a feature call */
        }
    } else if (cmd == VFIO_MIG_GET_PRECOPY_INFO) {
        if (kind != FD_DATA_SAVE && kind != FD_UNKNOWN)
            return 0; /* VFIO_EEH_PE_OP on a container, or not ours */
        in.type = EV_PRECOPY;
        u32 hdr[2] = {};
        in.arg_ok = bpf_probe_read_user(hdr, sizeof(hdr), (void *)args->arg) == 0;
        in.flags = hdr[1];
    } else if (cmd == VFIO_GROUP_GET_DEVICE_FD) {
        if (kind != FD_GROUP && kind != FD_UNKNOWN)
            return 0;
        in.type = EV_DEVNAME;
    } else {
        if (kind != FD_DEVICE)
            return 0;
        in.type = EV_RESET;
    }
    pending_set(pid_tgid, &in);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_ioctl)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    struct inflight c;
    if (!take_inflight(pid_tgid, &c))
        return 0;
    if (c.type != EV_IOCTL && c.type != EV_PRECOPY && c.type != EV_DEVNAME &&
        c.type != EV_RESET && c.type != EV_DIRTY)
        return 0;

    struct vfio_event *ev = new_event(pid_tgid, c.type);
    if (!ev)
        return 0;
    long ret = args->ret;
    start_exit_event(ev, &c, ret, bpf_ktime_get_ns());
    struct fd_key key = {.tgid = tgid, .fd = c.fd};

    if (c.type == EV_IOCTL) {
        u32 feature = c.flags & FEATURE_MASK;
        ev->state = c.req_state;
        if (feature == FEATURE_MIG_DATA_SIZE) {
            s32 dfd = c.fd;
            last_dev.update(&pid_tgid, &dfd);
        }
        /* learn (or confirm) the device fd */
        struct fd_info *dev = fds.lookup(&key);
        if (!dev) {
            struct fd_info fresh = {.kind = FD_DEVICE};
            fds_put(tgid, c.fd, &fresh);
            dev = fds.lookup(&key);
        }
        if (ret == 0 && !(c.flags & FEATURE_PROBE) && c.arg_ok) {
            s32 data_fd = feature_result(ev, &c, dev);
            if (data_fd >= 0) {
                struct fd_info di = {};
                di.kind = c.req_state == STATE_RESUMING ? FD_DATA_LOAD : FD_DATA_SAVE;
                di.owner = c.fd;
                fds_put(tgid, data_fd, &di);
            }
        }
    } else if (c.type == EV_PRECOPY) {
        struct fd_info *di = fds.lookup(&key);
        if (!di && ret == 0) {
            /* only a migration data fd answers 0x3b79 (EEH_PE_OP is POWER-only): one
             * opened before we attached. QEMU asks its device for MIG_DATA_SIZE right
             * before (vfio_state_pending_exact), so that device is the owner */
            s32 *last = last_dev.lookup(&pid_tgid);
            struct fd_info fresh = {.kind = FD_DATA_SAVE, .owner = last ? *last : -1};
            fds_put(tgid, c.fd, &fresh);
            di = fds.lookup(&key);
        }
        if (di) {
            ev->aux_fd = di->owner;
            ev->kind = di->kind;
        }
        if (ret == 0 && c.arg_ok)
            read_precopy_info(ev, c.arg);
    } else if (c.type == EV_DEVNAME) {
        /* the group fd ioctl takes the device name and returns the new device fd */
        bpf_probe_read_user_str(ev->name, sizeof(ev->name), (void *)c.arg);
        ev->aux_fd = ret;
        if (ret >= 0) {
            struct fd_info di = {.kind = FD_DEVICE};
            fds_put(tgid, (s32)ret, &di);
        }
    } else if (c.type == EV_DIRTY) {
        if (c.kind == FD_CONTAINER) {
            struct fd_info *ci = fds.lookup(&key);
            if (!ci) {
                struct fd_info fresh = {.kind = FD_CONTAINER};
                fds_put(tgid, c.fd, &fresh);
            }
        }
    } else if (c.type == EV_RESET) {
        struct fd_info *dev = fds.lookup(&key);
        if (dev && ret == 0) {
            dev->state = 2; /* RUNNING */
            dev->state_known = 1;
        }
    }
    emit(args, ev);
    return 0;
}

/* ---- read / write on data fds ------------------------------------------------ */

static __always_inline int data_enter(u8 type, int fd, u64 count)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    int slot = target_slot(tgid);
    if (slot < 0)
        return 0;
    u8 fk = fast_kind(slot, fd);
    if (fk != FD_DATA_SAVE && fk != FD_DATA_LOAD && fk != KIND_SLOW)
        return 0;
    struct fd_key key = {.tgid = tgid, .fd = fd};
    struct fd_info *fi = fds.lookup(&key);
    if (!fi || (fi->kind != FD_DATA_SAVE && fi->kind != FD_DATA_LOAD))
        return 0;
    struct inflight in = {};
    in.ts_ns = bpf_ktime_get_ns();
    in.fd = fd;
    in.count = count;
    in.kind = fi->kind;
    in.type = type;
    pending_set(pid_tgid, &in);
    return 0;
}

static __always_inline int data_exit(void *ctx, u8 type, long ret)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    struct inflight c;
    if (!take_inflight(pid_tgid, &c) || c.type != type)
        return 0;
    struct vfio_event *ev = new_event(pid_tgid, type);
    if (!ev)
        return 0;
    start_exit_event(ev, &c, ret, bpf_ktime_get_ns());
    ev->b = c.count;
    ev->a = ret > 0 ? ret : 0;
    ev->arg_ok = 1;
    /* charge the bytes to the owning device and its current phase */
    struct fd_key key = {.tgid = tgid, .fd = ev->fd};
    struct fd_info *di = fds.lookup(&key);
    ev->aux_fd = -1;
    if (di) {
        ev->aux_fd = di->owner;
        struct fd_key dk = {.tgid = tgid, .fd = di->owner};
        struct fd_info *dev = fds.lookup(&dk);
        if (dev && dev->state_known) {
            ev->state = dev->state;
            ev->state_known = 1;
        }
    }
    emit(ctx, ev);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_read)
{
    return data_enter(EV_READ, (int)args->fd, args->count);
}

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    return data_exit(args, EV_READ, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_enter_write)
{
    return data_enter(EV_WRITE, (int)args->fd, args->count);
}

TRACEPOINT_PROBE(syscalls, sys_exit_write)
{
    return data_exit(args, EV_WRITE, args->ret);
}

/* ---- close: forget the fd (numbers are reused) -------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    int slot = target_slot(tgid);
    if (slot < 0 || fast_kind(slot, (int)args->fd) == 0)
        return 0;
    struct fd_key key = {.tgid = tgid, .fd = (int)args->fd};
    struct fd_info *fi = fds.lookup(&key);
    if (!fi)
        return 0;
    struct vfio_event *ev = new_event(pid_tgid, EV_CLOSE);
    if (ev) {
        ev->ts_ns = bpf_ktime_get_ns();
        ev->fd = key.fd;
        ev->kind = fi->kind;
        ev->aux_fd = fi->owner;
        ev->arg_ok = 1;
        emit(args, ev);
    }
    fds.delete(&key);
    set_kind(tgid, key.fd, 0);
    return 0;
}
