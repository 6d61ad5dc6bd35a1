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
 * page again. Time comes from the TSC, calibrated against PIT channel 2 at
 * boot. Progress goes to COM1 as "migprof-guest: ..." lines.
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

/* TSC ticks per millisecond, measured over 50 ms of PIT channel 2 (1.193182 MHz). */
static u32 tsc_per_ms(void)
{
	const u32 ms = 50;
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
	u32 credit = 0; /* pages owed, times 1000 (rate is per second, slices are 1 ms) */
	const u32 pages_per_s = rate * (MIB / PAGE);
	u64 dirtied = 0; /* pages written since boot */
	u32 ms = 0, last_report = 0;
	u64 last_dirtied = 0;
	u64 slice_end = rdtsc() + tpm;

	for (;;) {
		if (pages) {
			u32 n;
			if (rate) {
				credit += pages_per_s;
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
		/* wait out the slice; when behind (TCG, migration stalls) skip ahead,
		 * counting the lost slices so the clock stays right */
		u64 now = rdtsc();
		if (rate || !pages) {
			while ((now = rdtsc()) < slice_end)
				__asm__ volatile("pause");
		}
		while (now >= slice_end) {
			slice_end += tpm;
			ms++;
			if (rate && now >= slice_end + 100ull * tpm) {
				/* far behind: do not replay the backlog of credit */
				credit = 0;
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
