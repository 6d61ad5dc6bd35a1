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
	mov $stack_top, %esp
	push %ebx	/* struct multiboot_info * */
	push %eax	/* magic */
	call kmain
1:	hlt
	jmp 1b

	.section .note.GNU-stack, "", @progbits
