/* Multiboot (v1) entry for the migprof lab guest.
 *
 * QEMU's -kernel loader recognises the multiboot header in the first 8 KiB of a
 * 32-bit ELF, loads the segments, and enters here in 32-bit protected mode with
 * paging off, EAX = 0x2BADB002 and EBX = the multiboot information structure.
 */
#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003 /* page-align modules, want memory info */

	.section .multiboot, "a"
	.align 4
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.section .bss
	.align 16
stack_bottom:
	.skip 16384
stack_top:

	.section .text
	.globl _start
_start:
	cli
	/* our own flat GDT: multiboot leaves GDTR undefined, and interrupt gates load CS */
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	mov $0x10, %cx
	mov %cx, %ds
	mov %cx, %es
	mov %cx, %fs
	mov %cx, %gs
	mov %cx, %ss
	mov $stack_top, %esp
	push %ebx	/* struct multiboot_info * */
	push %eax	/* magic */
	call kmain
1:	hlt
	jmp 1b

/* IRQ 0-15 (vectors 0x20-0x2f after kmain remaps the PICs): acknowledge and return.
 * The guest only uses the timer tick to wake from hlt. */
	.globl irq_stub
irq_stub:
	push %eax
	mov $0x20, %al
	outb %al, $0xa0	/* EOI to the slave (harmless when it raised nothing) */
	outb %al, $0x20	/* EOI to the master */
	pop %eax
	iret

/* any CPU exception: stop here (nothing in the guest should raise one) */
	.globl fault_stub
fault_stub:
	cli
2:	hlt
	jmp 2b

	.section .rodata
	.align 8
gdt:
	.quad 0x0000000000000000
	.quad 0x00cf9a000000ffff	/* 0x08: code, flat 4 GiB, 32-bit */
	.quad 0x00cf92000000ffff	/* 0x10: data, flat 4 GiB */
gdt_desc:
	.word gdt_desc - gdt - 1
	.long gdt

	.section .note.GNU-stack, "", @progbits
