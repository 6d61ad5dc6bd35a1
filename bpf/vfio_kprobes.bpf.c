/* vfio_kprobes.bpf.c: VFIO migration ioctls and data-file I/O seen at the kernel's VFIO code.
 *
 * Attach points (made by profiler/sources/bpf.py, path "kprobe"):
 *   kprobe+kretprobe vfio_device_fops_unl_ioctl      -> ioctl_enter / ioctl_exit
 *   kprobe+kretprobe <driver>_save_read               -> read_enter / read_exit
 *   kprobe+kretprobe <driver>_resume_write            -> write_enter / write_exit
 *   kprobe+kretprobe <driver>_precopy_ioctl           -> precopy_enter / precopy_exit
 *   tracepoint syscalls:sys_enter_close (auto)        -> forget data files
 *   (driver = mlx5vf, hisi_acc_vf, pds_vfio, virtiovf, qat_vf, xe_vfio_pci, mtty)
 * Maps:   targets, dev_files (struct file * -> fd_info: the device's phase),
 *         data_files (struct file * -> fd_info: fd number, owner), fd_files ((tgid, fd) ->
 *         struct file *, for close), inflight, events (ring/perf buffer), drops.
 * Event:  struct vfio_event of vfio.h, exactly as the tracepoint program sends it.
 * Kernel: kprobes and the VFIO symbols (vfio.ko, the variant driver or mtty.ko loaded).
 *
 * Nothing runs on the target's other syscalls: these functions are only entered for VFIO
 * device ioctls and migration data files, which also tells device fds from container fds
 * (0x3b75 on a container goes to vfio_fops_unl_ioctl, not hooked). fd numbers come from the
 * syscall's saved registers (arg 0 = fd on x86-64).
 */
#include <uapi/linux/ptrace.h>
#include <linux/sched.h>
#include <linux/fs.h>
#include <linux/fdtable.h>
#include "vfio.h"

#ifndef TARGET_TGID
#define TARGET_TGID 0
#endif
#ifndef USE_RINGBUF
#define USE_RINGBUF 1
#endif
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 256
#endif
#ifndef MAX_TARGETS
#define MAX_TARGETS 64 /* processes traced at once (targets, added and removed at run time) */
#endif

struct data_file {
    struct fd_info info; /* kind, owner fd */
    u64 owner_file;      /* struct file * of the owning device, 0 when unknown */
    s32 fd;
    u32 pad;
};

BPF_HASH(targets, u32, u32, MAX_TARGETS);
BPF_HASH(fds, struct fd_key, struct fd_info, 16); /* unused here; seeded by the loader */
BPF_HASH(dev_files, u64, struct fd_info, 256);
BPF_HASH(data_files, u64, struct data_file, 1024);
BPF_HASH(fd_files, struct fd_key, u64, 1024);
BPF_HASH(inflight, u64, struct inflight, 4096);
BPF_HASH(inflight_file, u64, u64, 4096);
BPF_PERCPU_ARRAY(drops, u64, 1);
BPF_PERCPU_ARRAY(scratch, struct vfio_event, 1);
#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline int is_target(u32 tgid)
{
#if TARGET_TGID
    return tgid == TARGET_TGID;
#else
    return targets.lookup(&tgid) != NULL;
#endif
}

static __always_inline void emit(void *ctx, struct vfio_event *ev)
{
#if USE_RINGBUF
    int err = events.ringbuf_output(ev, sizeof(*ev), 0);
#else
    int err = events.perf_submit(ctx, ev, sizeof(*ev));
#endif
    if (err) {
        int zero = 0;
        u64 *d = drops.lookup(&zero);
        if (d)
            (*d)++;
    }
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

/* the syscall's first argument (the fd) from the user registers saved on the task's stack */
static __always_inline s32 syscall_fd(void)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    void *stack = NULL;
    bpf_probe_read_kernel(&stack, sizeof(stack), &task->stack);
    if (!stack)
        return -1;
    struct pt_regs *regs = (struct pt_regs *)(stack + THREAD_SIZE) - 1;
    u64 di = 0;
    bpf_probe_read_kernel(&di, sizeof(di), &regs->di);
    return (s32)di;
}

/* struct file * behind an fd of the current task */
static __always_inline u64 file_of_fd(s32 fd)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct files_struct *files = NULL;
    struct fdtable *fdt = NULL;
    struct file **arr = NULL;
    u64 f = 0;
    unsigned int max = 0;
    bpf_probe_read_kernel(&files, sizeof(files), &task->files);
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), &files->fdt);
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max, sizeof(max), &fdt->max_fds);
    if (fd < 0 || (unsigned int)fd >= max)
        return 0;
    bpf_probe_read_kernel(&arr, sizeof(arr), &fdt->fd);
    if (!arr)
        return 0;
    bpf_probe_read_kernel(&f, sizeof(f), &arr[fd]);
    return f;
}

/* take this thread's entry record and its struct file * out of the in-flight maps */
static __always_inline int take_inflight(u64 pid_tgid, struct inflight *c, u64 *file)
{
    struct inflight *inp = inflight.lookup(&pid_tgid);
    u64 *fp = inflight_file.lookup(&pid_tgid);
    if (!inp || !fp)
        return 0;
    *c = *inp;
    *file = *fp;
    inflight.delete(&pid_tgid);
    inflight_file.delete(&pid_tgid);
    return 1;
}

/* ---- device ioctls ------------------------------------------------------------ */

int ioctl_enter(struct pt_regs *ctx, struct file *filep, unsigned int cmd, unsigned long arg)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    if (cmd != VFIO_DEVICE_FEATURE && cmd != VFIO_DEVICE_RESET)
        return 0;
    struct inflight in = {};
    in.ts_ns = bpf_ktime_get_ns();
    in.arg = arg;
    in.cmd = cmd;
    in.fd = syscall_fd();
    in.kind = FD_DEVICE;
    if (cmd == VFIO_DEVICE_FEATURE) {
        read_feature_hdr(&in, arg);
        in.type = EV_IOCTL;
    } else {
        in.type = EV_RESET;
    }
    u64 f = (u64)filep;
    inflight.update(&pid_tgid, &in);
    inflight_file.update(&pid_tgid, &f);
    return 0;
}

int ioctl_exit(struct pt_regs *ctx)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    struct inflight c;
    u64 devf;
    if (!take_inflight(pid_tgid, &c, &devf))
        return 0;
    struct vfio_event *ev = new_event(pid_tgid, c.type);
    if (!ev)
        return 0;
    long ret = PT_REGS_RC(ctx);
    start_exit_event(ev, &c, ret, bpf_ktime_get_ns()); /* c.kind is FD_DEVICE */
    ev->state = c.req_state;

    struct fd_info *dev = dev_files.lookup(&devf);
    if (!dev) {
        struct fd_info fresh = {.kind = FD_DEVICE};
        dev_files.update(&devf, &fresh);
        dev = dev_files.lookup(&devf);
    }
    if (c.type == EV_RESET) {
        if (dev && ret == 0) {
            dev->state = 2;
            dev->state_known = 1;
        }
    } else if (ret == 0 && !(c.flags & FEATURE_PROBE) && c.arg_ok) {
        s32 data_fd = feature_result(ev, &c, dev);
        u64 df = data_fd >= 0 ? file_of_fd(data_fd) : 0;
        if (df) {
            struct data_file d = {};
            d.info.kind = c.req_state == STATE_RESUMING ? FD_DATA_LOAD : FD_DATA_SAVE;
            d.info.owner = c.fd;
            d.owner_file = devf;
            d.fd = data_fd;
            data_files.update(&df, &d);
            struct fd_key k = {.tgid = tgid, .fd = data_fd};
            fd_files.update(&k, &df);
        }
    }
    emit(ctx, ev);
    return 0;
}

/* ---- data files ----------------------------------------------------------------- */

static __always_inline int data_enter(u8 type, u8 kind, struct file *filp, u64 count, u64 arg)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    u64 f = (u64)filp;
    struct data_file *d = data_files.lookup(&f);
    struct inflight in = {};
    if (!d) {
        /* only migration data files reach these functions: one opened before attach */
        struct data_file fresh = {};
        fresh.info.kind = kind;
        fresh.info.owner = -1;
        fresh.fd = syscall_fd();
        data_files.update(&f, &fresh);
        struct fd_key k = {.tgid = tgid, .fd = fresh.fd};
        fd_files.update(&k, &f);
        in.fd = fresh.fd;
    } else {
        in.fd = d->fd;
    }
    in.ts_ns = bpf_ktime_get_ns();
    in.count = count;
    in.arg = arg;
    in.kind = kind;
    in.type = type;
    inflight.update(&pid_tgid, &in);
    inflight_file.update(&pid_tgid, &f);
    return 0;
}

static __always_inline int data_exit(struct pt_regs *ctx, u8 type)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (!is_target(pid_tgid >> 32))
        return 0;
    struct inflight c;
    u64 f;
    if (!take_inflight(pid_tgid, &c, &f) || c.type != type)
        return 0;
    struct vfio_event *ev = new_event(pid_tgid, type);
    if (!ev)
        return 0;
    long ret = PT_REGS_RC(ctx);
    start_exit_event(ev, &c, ret, bpf_ktime_get_ns());
    ev->arg_ok = 1;
    struct data_file *d = data_files.lookup(&f);
    if (d) {
        ev->aux_fd = d->info.owner;
        ev->kind = d->info.kind;
        u64 owner = d->owner_file;
        struct fd_info *dev = owner ? dev_files.lookup(&owner) : NULL;
        if (dev && dev->state_known) {
            ev->state = dev->state;
            ev->state_known = 1;
        }
    }
    if (type == EV_PRECOPY) {
        ev->cmd = VFIO_MIG_GET_PRECOPY_INFO;
        if (ret == 0)
            read_precopy_info(ev, c.arg);
    } else {
        ev->b = c.count;
        ev->a = ret > 0 ? ret : 0;
    }
    emit(ctx, ev);
    return 0;
}

int read_enter(struct pt_regs *ctx, struct file *filp, char __user *buf, size_t len)
{
    return data_enter(EV_READ, FD_DATA_SAVE, filp, len, 0);
}

int read_exit(struct pt_regs *ctx)
{
    return data_exit(ctx, EV_READ);
}

int write_enter(struct pt_regs *ctx, struct file *filp, const char __user *buf, size_t len)
{
    return data_enter(EV_WRITE, FD_DATA_LOAD, filp, len, 0);
}

int write_exit(struct pt_regs *ctx)
{
    return data_exit(ctx, EV_WRITE);
}

int precopy_enter(struct pt_regs *ctx, struct file *filp, unsigned int cmd, unsigned long arg)
{
    if (cmd != VFIO_MIG_GET_PRECOPY_INFO)
        return 0;
    return data_enter(EV_PRECOPY, FD_DATA_SAVE, filp, 0, arg);
}

int precopy_exit(struct pt_regs *ctx)
{
    return data_exit(ctx, EV_PRECOPY);
}

/* ---- close: forget the data file behind the fd ------------------------------------- */

TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tgid = pid_tgid >> 32;
    if (!is_target(tgid))
        return 0;
    struct fd_key k = {.tgid = tgid, .fd = (int)args->fd};
    u64 *fp = fd_files.lookup(&k);
    if (!fp)
        return 0;
    u64 f = *fp;
    struct data_file *d = data_files.lookup(&f);
    struct vfio_event *ev = new_event(pid_tgid, EV_CLOSE);
    if (ev) {
        ev->ts_ns = bpf_ktime_get_ns();
        ev->fd = k.fd;
        ev->kind = d ? d->info.kind : FD_DATA_SAVE;
        ev->aux_fd = d ? d->info.owner : -1;
        ev->arg_ok = 1;
        emit(args, ev);
    }
    data_files.delete(&f);
    fd_files.delete(&k);
    return 0;
}
