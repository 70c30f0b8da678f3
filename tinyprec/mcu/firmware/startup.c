/* Bare-metal start-up for QEMU's MPS2 boards (Cortex-M4/M7/M33), written for `tinyprec mcu`.
 *
 * Vector table, reset handler (copy .data from flash, zero .bss, paint the stack, enable the FPU,
 * run static constructors, call main, exit through semihosting), a SysTick-based tick counter that
 * QEMU's `-icount shift=0` turns into an instruction counter, and the Arm semihosting calls the
 * harness uses for its console, its command line and its input/output files.
 */

#include <stdint.h>
#include <string.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_bottom, __stack_top;
extern int main(void);
extern void __libc_init_array(void);

#define STACK_PAINT 0xC5C5C5C5u

/* ---- Arm semihosting (BKPT 0xAB in Thumb state) ---- */
static inline int tp_sh_call(int op, const void* arg) {
  register int r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void tp_sh_write0(const char* s) { tp_sh_call(0x04, s); }

int tp_sh_open(const char* name, int mode) {
  const uint32_t args[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)strlen(name)};
  return tp_sh_call(0x01, args);
}

int tp_sh_close(int fd) {
  const uint32_t args[1] = {(uint32_t)fd};
  return tp_sh_call(0x02, args);
}

/* Returns the number of bytes NOT written (0 on success), as the semihosting spec says. */
int tp_sh_write(int fd, const void* buf, uint32_t n) {
  const uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, n};
  return tp_sh_call(0x05, args);
}

/* Returns the number of bytes NOT read (n at end of file). */
int tp_sh_read(int fd, void* buf, uint32_t n) {
  const uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, n};
  return tp_sh_call(0x06, args);
}

int tp_sh_cmdline(char* buf, uint32_t n) {
  uint32_t args[2] = {(uint32_t)buf, n};
  return tp_sh_call(0x15, args);
}

void tp_sh_exit(int code) {
  const uint32_t args[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  tp_sh_call(0x20, args); /* SYS_EXIT_EXTENDED: QEMU exits with `code` */
  for (;;) {
  }
}

/* ---- newlib hooks: no files, no heap growth past the linker's heap ---- */
void _exit(int code) { tp_sh_exit(code); }
void _init(void) {}
void _fini(void) {}

/* ---- tick counter: SysTick counting down from 2^24-1 at the core clock, wraps counted ---- */
#define SYST_CSR (*(volatile uint32_t*)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018u)
static volatile uint32_t tp_wraps;

void SysTick_Handler(void) { tp_wraps++; }

void tp_ticks_start(void) {
  SYST_RVR = 0x00FFFFFFu;
  SYST_CVR = 0;
  SYST_CSR = 0x7u; /* CLKSOURCE = core clock, TICKINT, ENABLE */
  while (SYST_CVR == 0) {
    /* the first tick loads the reload value; before it the count would read as a full period */
  }
}

uint64_t tp_ticks(void) {
  uint32_t wraps, value;
  do {
    wraps = tp_wraps;
    value = SYST_CVR;
  } while (wraps != tp_wraps);
  return (uint64_t)wraps * 0x01000000u + (0x00FFFFFFu - value);
}

/* Ticks taken by a loop of exactly 2 * n instructions (SUBS + BNE per turn): the host divides to
 * get instructions per tick under -icount. */
uint64_t tp_calibrate(uint32_t n) {
  const uint64_t t0 = tp_ticks();
  __asm__ volatile(
      "1: subs %0, %0, #1\n"
      "   bne 1b\n"
      : "+r"(n)
      :
      : "cc");
  return tp_ticks() - t0;
}

/* Bytes of the stack ever written since reset (the painted words the program overwrote). */
uint32_t tp_stack_used(void) {
  const uint32_t* p = &__stack_bottom;
  while (p < &__stack_top && *p == STACK_PAINT) ++p;
  return (uint32_t)((const uint8_t*)&__stack_top - (const uint8_t*)p);
}

uint32_t tp_stack_size(void) { return (uint32_t)((const uint8_t*)&__stack_top - (const uint8_t*)&__stack_bottom); }

/* ---- faults and reset ---- */
static void tp_fault(const char* what) {
  tp_sh_write0("tinyprec: fault ");
  tp_sh_write0(what);
  tp_sh_write0("\n");
  tp_sh_exit(3);
}

void HardFault_Handler(void) { tp_fault("hardfault"); }
void Default_Handler(void) { tp_fault("unexpected interrupt"); }

__attribute__((noreturn)) void Reset_Handler(void) {
  uint32_t* src = &__data_load;
  for (uint32_t* dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start; dst < &__bss_end;) *dst++ = 0;
  {
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t* p = &__stack_bottom; (uint32_t)p < sp - 256; ++p) *p = STACK_PAINT;
  }
  /* CP10/CP11 full access: the kernels are built for the hard-float ABI. */
  *(volatile uint32_t*)0xE000ED88u |= (0xFu << 20);
  __asm__ volatile("dsb\n isb" ::: "memory");
  tp_ticks_start();
  __libc_init_array();
  tp_sh_exit(main());
  for (;;) {
  }
}

typedef void (*tp_vector)(void);

__attribute__((section(".vectors"), used)) const tp_vector tp_vector_table[16 + 32] = {
    (tp_vector)(uintptr_t)&__stack_top,
    Reset_Handler,
    Default_Handler,   /* NMI */
    HardFault_Handler, /* HardFault */
    HardFault_Handler, /* MemManage */
    HardFault_Handler, /* BusFault */
    HardFault_Handler, /* UsageFault */
    HardFault_Handler, /* SecureFault (v8-M) */
    0,
    0,
    0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
    /* external interrupts: none enabled; a stray one is reported */
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler,
};
