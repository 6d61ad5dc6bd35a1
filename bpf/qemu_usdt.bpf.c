/* qemu_usdt.bpf.c: QEMU's dtrace (USDT) trace probes, provider "qemu", as raw argument records.
 *
 * Attach points: usdt:<qemu binary>:qemu:<event> for the migration and VFIO events the
 *                loader picks (profiler/sources/usdt.py), one function usdt_<event> each.
 * Maps:          scratch (per-CPU record), events (ring or perf buffer), drops.
 * Event:         struct usdt_event: up to USDT_MAX_ARGS raw argument words and up to
 *                USDT_MAX_STRS strings (bpf_probe_read_user_str of char * arguments);
 *                user space decodes them with the event's trace-events argument list.
 * Kernel:        uprobes; 5.5+ (bpf_probe_read_user_str), 5.8+ for the ring buffer.
 *
 * The loader appends one small function per probe (see the end of this file); the file
 * alone compiles to the shared helpers and maps.
 */
#include <uapi/linux/ptrace.h>

#ifndef USE_RINGBUF
#define USE_RINGBUF 1
#endif
#ifndef TARGET_TGID
#define TARGET_TGID 0
#endif

#define USDT_MAX_ARGS 8
#define USDT_MAX_STRS 3
#define USDT_STR_LEN 64

struct usdt_event {
    u64 ts_ns;
    u32 tgid;
    u32 tid;
    u32 id;    /* index of the probe in the loader's list */
    u32 nargs;
    u64 args[USDT_MAX_ARGS];
    char strs[USDT_MAX_STRS][USDT_STR_LEN];
};

BPF_PERCPU_ARRAY(scratch, struct usdt_event, 1);
BPF_PERCPU_ARRAY(drops, u64, 1);
#if USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, 64);
#else
BPF_PERF_OUTPUT(events);
#endif

static __always_inline struct usdt_event *usdt_begin(u32 id, u32 nargs)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
#if TARGET_TGID
    if ((pid_tgid >> 32) != TARGET_TGID)
        return NULL;
#endif
    int zero = 0;
    struct usdt_event *e = scratch.lookup(&zero);
    if (!e)
        return NULL;
    __builtin_memset(e, 0, sizeof(*e));
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = pid_tgid >> 32;
    e->tid = (u32)pid_tgid;
    e->id = id;
    e->nargs = nargs;
    return e;
}

/* strings: the k-th char * argument (bit i of strmask set) goes to strs[k] */
static __always_inline void usdt_strings(struct usdt_event *e, u32 strmask)
{
    int k = 0;
#pragma unroll
    for (int i = 0; i < USDT_MAX_ARGS; i++) {
        if (!(strmask & (1u << i)) || k >= USDT_MAX_STRS)
            continue;
        if (e->args[i])
            bpf_probe_read_user_str(e->strs[k], USDT_STR_LEN, (void *)e->args[i]);
        k++;
    }
}

static __always_inline int usdt_end(void *ctx, struct usdt_event *e, u32 strmask)
{
    usdt_strings(e, strmask);
#if USE_RINGBUF
    if (events.ringbuf_output(e, sizeof(*e), 0) != 0) {
#else
    if (events.perf_submit(ctx, e, sizeof(*e)) != 0) {
#endif
        int zero = 0;
        u64 *d = drops.lookup(&zero);
        if (d)
            (*d)++;
    }
    return 0;
}

/* Probe functions: bcc binds bpf_usdt_readarg(n, ctx, ...) to the probe of the function
 * that spells it out (not through a macro), and generates readers only for the arguments
 * a probe has, so profiler/sources/usdt.py appends one function per probe, e.g.
 *
 *   int usdt_vfio_save_block(struct pt_regs *ctx) {
 *       struct usdt_event *e = usdt_begin(4, 2);
 *       if (!e) return 0;
 *       bpf_usdt_readarg(1, ctx, &e->args[0]);
 *       bpf_usdt_readarg(2, ctx, &e->args[1]);
 *       return usdt_end(ctx, e, 0x1);
 *   }
 */
