/* migprof lab guest: dirties a working set of guest RAM at a set rate.
 *
 * A freestanding 32-bit multiboot kernel (no libc, no libgcc: nothing here may
 * divide 64-bit numbers). Parameters come from the multiboot command line
 * (QEMU -append), e.g. "dirty_mb=32 rate_mbps=200":
 *
 *   dirty_mb=N    size of the working set in MiB (default 16; 0 = stay idle)
 *   rate_mbps=N   MiB of that set written per second (default 100; 0 = flat out)
 *   report_ms=N   progress line period on the serial port (default 1000)
 *
 * One 32-bit store per 4 KiB page marks the page dirty for QEMU's dirty
 * bitmap, and the stored value changes every sweep so no page becomes a zero
 * page again. Progress goes to COM1 as "migprof-guest: ..." lines.
 *
 * The rate is kept against guest time, whatever the host does. Time comes from
 * the TSC (under TCG the host's TSC, frozen while the VM is stopped), calibrated
 * against PIT channel 2 at boot: the fastest of several short calibrations, as a
 * vCPU thread the host preempts mid-calibration only ever reads too many ticks.
 * Every elapsed millisecond owes rate/1000 of pages, also the milliseconds the
 * vCPU did not run (host load, a migration's BQL waits): they are paid as soon
 * as it runs again, up to BACKLOG_MS of them. Between payments the vCPU halts
 * until the next PIT tick (1 kHz) rather than spinning, so under TCG it leaves
 * the host CPU to the migration and to the other QEMU.
 */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

#define PAGE 4096u
#define MIB (1024u * 1024u)
#define COM1 0x3f8

struct multiboot_info {
	u32 flags;
	u32 mem_lower; /* KiB below 1 MiB, valid if flags & 1 */
	u32 mem_upper; /* KiB above 1 MiB, valid if flags & 1 */
	u32 boot_device;
	u32 cmdline; /* physical address of a NUL-terminated string, flags & 4 */
};

extern char _end[];

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* no interrupts */
	outb(COM1 + 3, 0x80); /* DLAB */
	outb(COM1 + 0, 0x01); /* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03); /* 8N1 */
	outb(COM1 + 2, 0xc7); /* FIFO */
}

static void putc(char c)
{
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, (u8)c);
}

static void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void putu(u32 v)
{
	char buf[11];
	int i = 10;
	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts(&buf[i]);
}

static void putx(u32 v)
{
	static const char hex[] = "0123456789abcdef";
	puts("0x");
	for (int s = 28; s >= 0; s -= 4)
		putc(hex[(v >> s) & 0xf]);
}

/* Value of "key=N" in the command line, or dflt when absent or not a number. */
static u32 arg(const char *cmd, const char *key, u32 dflt)
{
	if (!cmd)
		return dflt;
	for (const char *p = cmd; *p; p++) {
		if (p != cmd && p[-1] != ' ')
			continue;
		const char *k = key, *q = p;
		while (*k && *q == *k) {
			k++;
			q++;
		}
		if (*k || *q != '=')
			continue;
		q++;
		if (*q < '0' || *q > '9')
			return dflt;
		u32 v = 0;
		while (*q >= '0' && *q <= '9')
			v = v * 10 + (u32)(*q++ - '0');
		return v;
	}
	return dflt;
}

/* TSC ticks per millisecond over `ms` of PIT channel 2 (1.193182 MHz). */
static u32 tsc_per_ms_once(u32 ms)
{
	const u16 latch = (u16)(1193182u * ms / 1000u);
	outb(0x61, (u8)((inb(0x61) & ~0x02) | 0x01)); /* gate on, speaker off */
	outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0 */
	outb(0x42, (u8)(latch & 0xff));
	outb(0x42, (u8)(latch >> 8));
	u64 t0 = rdtsc();
	while (!(inb(0x61) & 0x20))
		;
	u64 d = rdtsc() - t0;
	u32 per_ms = (u32)d / ms;
	return per_ms ? per_ms : 1;
}

/* The fewest TSC ticks per ms of CALIBRATIONS runs: a run the host interrupted
 * (the vCPU thread preempted between the PIT's end and the second rdtsc) reads
 * more ticks than elapsed, never fewer. */
#define CALIBRATIONS 7
static u32 tsc_per_ms(void)
{
	u32 best = 0;
	for (int i = 0; i < CALIBRATIONS; i++) {
		u32 v = tsc_per_ms_once(10);
		if (!best || v < best)
			best = v;
	}
	return best;
}

/* Interrupts: the PIT's channel 0 ticks at 1 kHz only to wake the vCPU from hlt. */
struct idt_gate {
	u16 off_lo, sel;
	u8 zero, type;
	u16 off_hi;
} __attribute__((packed));
static struct idt_gate idt[0x30];
extern void irq_stub(void);
extern void fault_stub(void);

static void set_gate(int v, void (*fn)(void))
{
	u32 a = (u32)fn;
	idt[v].off_lo = (u16)(a & 0xffff);
	idt[v].sel = 0x08; /* boot.S's code segment */
	idt[v].zero = 0;
	idt[v].type = 0x8e; /* present, ring 0, 32-bit interrupt gate */
	idt[v].off_hi = (u16)(a >> 16);
}

static void timer_init(void)
{
	for (int v = 0; v < 0x20; v++)
		set_gate(v, fault_stub);
	for (int v = 0x20; v < 0x30; v++)
		set_gate(v, irq_stub);
	struct {
		u16 limit;
		u32 base;
	} __attribute__((packed)) d = {sizeof(idt) - 1, (u32)idt};
	__asm__ volatile("lidt %0" : : "m"(d));
	/* PICs: IRQ 0-7 -> 0x20, 8-15 -> 0x28; only IRQ 0 unmasked */
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0x20);
	outb(0xa1, 0x28);
	outb(0x21, 0x04);
	outb(0xa1, 0x02);
	outb(0x21, 0x01);
	outb(0xa1, 0x01);
	outb(0x21, 0xfe);
	outb(0xa1, 0xff);
	/* PIT channel 0, rate generator, 1193 counts: ~1000 Hz */
	outb(0x43, 0x34);
	outb(0x40, (u8)(1193 & 0xff));
	outb(0x40, (u8)(1193 >> 8));
}

/* KVM's signature in the hypervisor CPUID leaf. Under KVM the guest spins instead of
 * halting: a KVM nested in another hypervisor (the lab's CI hosts) fails to emulate the
 * IRET of the tick handler ("KVM internal error: emulation failure"), and a KVM vCPU does
 * not share the host CPU's time with QEMU's own threads the way a TCG one does. */
static int on_kvm(void)
{
	u32 a = 0x40000000u, b, c, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "=c"(c), "=d"(d));
	return b == 0x4b4d564bu && c == 0x564b4d56u && d == 0x4du; /* "KVMKVMKVM\0\0\0" */
}

static int halting; /* wait for ticks halted (TCG), else spin (KVM) */

/* Sleep until the next interrupt (the 1 kHz tick), or spin a little under KVM. */
static inline void idle(void)
{
	if (halting)
		__asm__ volatile("sti; hlt; cli" ::: "memory");
	else
		__asm__ volatile("pause" ::: "memory");
}

#define BACKLOG_MS 200u /* the most milliseconds of owed pages carried over */

void kmain(u32 magic, struct multiboot_info *mbi)
{
	serial_init();
	const char *cmd = 0;
	if (magic == 0x2BADB002u && (mbi->flags & 4))
		cmd = (const char *)mbi->cmdline;
	u32 dirty_mb = arg(cmd, "dirty_mb", 16);
	u32 rate = arg(cmd, "rate_mbps", 100);
	u32 report_ms = arg(cmd, "report_ms", 1000);
	if (!report_ms)
		report_ms = 1000;

	/* working set starts at the first MiB boundary after the kernel image */
	u32 base = ((u32)_end + MIB - 1) & ~(MIB - 1);
	u32 top = 16 * MIB;
	if (magic == 0x2BADB002u && (mbi->flags & 1))
		top = MIB + mbi->mem_upper * 1024u;
	u32 avail = top > base ? (top - base) / MIB : 0;
	if (dirty_mb > avail) {
		puts("migprof-guest: warning: dirty_mb=");
		putu(dirty_mb);
		puts(" exceeds free RAM, using ");
		putu(avail);
		puts("\n");
		dirty_mb = avail;
	}
	u32 tpm = tsc_per_ms();
	u32 pages = dirty_mb * (MIB / PAGE);
	puts("migprof-guest: ready dirty_mb=");
	putu(dirty_mb);
	puts(" rate_mbps=");
	putu(rate);
	puts(" region=");
	putx(base);
	puts("+");
	putx(dirty_mb * MIB);
	puts(" tsc_khz=");
	putu(tpm);
	puts("\n");

	volatile u32 *mem = (volatile u32 *)base;
	u32 next = 0; /* next page to dirty */
	u32 sweep = 1; /* value stored; changes every sweep */
	/* pages owed, times 1000: each elapsed ms adds pages_per_s (the rate is per second) */
	u32 credit = 0;
	const u32 pages_per_s = rate * (MIB / PAGE);
	const u32 max_credit = pages_per_s * BACKLOG_MS; /* fits in 32 bits below 20 GiB/s */
	u64 dirtied = 0; /* pages written since boot */
	u32 ms = 0, last_report = 0;
	u64 last_dirtied = 0;
	halting = !on_kvm();
	if (halting)
		timer_init();
	u64 slice_end = rdtsc() + tpm;

	for (;;) {
		u32 n = 0;
		if (pages) {
			if (rate) {
				n = credit / 1000;
				credit -= n * 1000;
			} else {
				n = 4096; /* flat out: one batch, then look at the clock */
			}
			for (u32 i = 0; i < n; i++) {
				mem[next * (PAGE / 4)] = sweep;
				if (++next == pages) {
					next = 0;
					sweep++;
				}
			}
			dirtied += n;
		}
		/* wait for the next millisecond (halted, not spinning); then every elapsed
		 * millisecond, also those the vCPU did not run, owes its pages */
		u64 now = rdtsc();
		if (rate || !pages) {
			while ((now = rdtsc()) < slice_end)
				idle();
		}
		while (now >= slice_end) {
			slice_end += tpm;
			ms++;
			if (rate && pages) {
				credit += pages_per_s;
				if (credit > max_credit)
					credit = max_credit; /* far behind: drop the oldest debt */
			}
		}
		if (ms - last_report >= report_ms) {
			u32 done_mib = (u32)(dirtied >> 8);
			u32 mibps = (u32)((dirtied - last_dirtied) >> 8) * 1000u / (ms - last_report);
			puts("migprof-guest: t_ms=");
			putu(ms);
			puts(" dirtied_mib=");
			putu(done_mib);
			puts(" sweeps=");
			putu(sweep - 1);
			puts(" mibps=");
			putu(mibps);
			puts("\n");
			last_report = ms;
			last_dirtied = dirtied;
		}
	}
}
