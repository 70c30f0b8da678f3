// QEMU harness for the example application (main.cc), compiled in only with -DTINYPREC_MCU_HARNESS
// by `tinyprec mcu`. A firmware project does not need it.
//
// It routes MicroPrintf to Arm semihosting, counts ticks of SysTick around every Invoke (under QEMU's
// `-icount shift=0` a tick is a fixed number of executed instructions), records ticks per op through
// TFLM's profiler interface, and streams test samples: the input file holds N raw input tensors back
// to back, the output file receives N output tensors, the ticks file N little-endian uint64 tick counts.
// Every fact for the host is one line "tinyprec: <key> <values...>" on the semihosting console.

#ifndef TINYPREC_MCU_HARNESS_H_
#define TINYPREC_MCU_HARNESS_H_

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_profiler_interface.h"
#ifdef TINYPREC_DUMP_TENSORS
#include "tensorflow/lite/micro/memory_helpers.h"
#endif

extern "C" {
void tp_sh_write0(const char* s);
int tp_sh_open(const char* name, int mode);
int tp_sh_close(int fd);
int tp_sh_write(int fd, const void* buf, uint32_t n);
int tp_sh_read(int fd, void* buf, uint32_t n);
int tp_sh_cmdline(char* buf, uint32_t n);
uint64_t tp_ticks(void);
uint64_t tp_calibrate(uint32_t n);
uint32_t tp_stack_used(void);
uint32_t tp_stack_size(void);
}

namespace tinyprec_harness {

constexpr int kOpenReadBinary = 1;   // semihosting SYS_OPEN mode "rb"
constexpr int kOpenWriteBinary = 5;  // "wb"
constexpr uint32_t kCalibrationTurns = 1000000;

inline void Say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline void Say(const char* fmt, ...) {
  char line[192];
  va_list args;
  va_start(args, fmt);
  vsnprintf(line, sizeof(line), fmt, args);
  va_end(args);
  tp_sh_write0("tinyprec: ");
  tp_sh_write0(line);
  tp_sh_write0("\n");
}

// Decimal text of a 64-bit count (newlib-nano's printf has no %llu).
struct U64Text {
  char text[24];
  explicit U64Text(uint64_t v) {
    char rev[24];
    int n = 0;
    do {
      rev[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    for (int i = 0; i < n; ++i) text[i] = rev[n - 1 - i];
    text[n] = '\0';
  }
};

// MicroPrintf's text arrives without a line end.
inline void LogToConsole(const char* s) {
  tp_sh_write0(s);
  const size_t n = std::strlen(s);
  if (n == 0 || s[n - 1] != '\n') tp_sh_write0("\n");
}

// Ticks per op of the invokes during which it is enabled (TFLM calls it once per op). The event
// arrays live outside the object so that they land in .bss, not in .data with the vtable pointer.
constexpr uint32_t kMaxEvents = 256;
inline const char* g_event_tags[kMaxEvents];
inline uint64_t g_event_start[kMaxEvents];
inline uint64_t g_event_ticks[kMaxEvents];

class TickProfiler : public tflite::MicroProfilerInterface {
 public:
  uint32_t BeginEvent(const char* tag) override {
    if (!enabled_ || count_ >= kMaxEvents) return kMaxEvents;
    g_event_tags[count_] = tag;
    g_event_start[count_] = tp_ticks();
    return count_++;
  }

  void EndEvent(uint32_t handle) override {
    if (handle < kMaxEvents) g_event_ticks[handle] = tp_ticks() - g_event_start[handle];
  }

  void Enable(bool on) { enabled_ = on; }

  void Report() const {
    for (uint32_t i = 0; i < count_; ++i) {
      Say("op %u %s %s", static_cast<unsigned>(i), g_event_tags[i] ? g_event_tags[i] : "?", U64Text(g_event_ticks[i]).text);
    }
  }

 private:
  bool enabled_ = false;
  uint32_t count_ = 0;
};

inline TickProfiler& Profiler() {
  static TickProfiler profiler;
  return profiler;
}

inline void Init() {
  RegisterDebugLogCallback(LogToConsole);
  const uint64_t ticks = tp_calibrate(kCalibrationTurns);
  Say("calibration %lu %s", static_cast<unsigned long>(2 * kCalibrationTurns), U64Text(ticks).text);
}

// Invoke with the tick count around it.
inline TfLiteStatus TimedInvoke(tflite::MicroInterpreter& interpreter, uint64_t* ticks) {
  const uint64_t t0 = tp_ticks();
  const TfLiteStatus status = interpreter.Invoke();
  *ticks = tp_ticks() - t0;
  return status;
}

// Golden vector 0 once more with the per-op profiler on.
inline void ProfileOnce(tflite::MicroInterpreter& interpreter, const void* input, size_t bytes) {
  std::memcpy(interpreter.input(0)->data.raw, input, bytes);
  Profiler().Enable(true);
  uint64_t ticks = 0;
  const TfLiteStatus status = TimedInvoke(interpreter, &ticks);
  Profiler().Enable(false);
  if (status != kTfLiteOk) return;
  Say("profiled_invoke %s", U64Text(ticks).text);
  Profiler().Report();
}

// The command line split at spaces: argv[1] input file, argv[2] output file, argv[3] ticks file.
inline int Args(char** argv, int max_args) {
  static char cmdline[512];
  if (tp_sh_cmdline(cmdline, sizeof(cmdline)) != 0) return 0;
  int argc = 0;
  for (char* p = cmdline; *p != '\0' && argc < max_args;) {
    while (*p == ' ') *p++ = '\0';
    if (*p == '\0') break;
    argv[argc++] = p;
    while (*p != '\0' && *p != ' ') ++p;
  }
  return argc;
}

#ifdef TINYPREC_DUMP_TENSORS
// Debug build (TINYPREC_DUMP_TENSORS = the model's tensor count, TINYPREC_DUMP_ARENA = an arena large
// enough to keep every tensor): a second interpreter that preserves all tensors runs the first sample
// of the input file and writes every non-constant tensor to the output file as
// [uint32 index][uint32 bytes][bytes], so the host can name the first op whose output differs.
alignas(16) inline uint8_t g_dump_arena[TINYPREC_DUMP_ARENA];

template <typename Resolver>
inline int DumpTensors(const tflite::Model* model, const Resolver& resolver, char** argv) {
  static tflite::MicroInterpreter dbg(model, resolver, g_dump_arena, sizeof(g_dump_arena), nullptr, nullptr, true);
  if (dbg.AllocateTensors() != kTfLiteOk) {
    Say("error the dump arena of %u bytes is too small", static_cast<unsigned>(sizeof(g_dump_arena)));
    return -1;
  }
  const int in = tp_sh_open(argv[1], kOpenReadBinary);
  const int out = tp_sh_open(argv[2], kOpenWriteBinary);
  if (in < 0 || out < 0 || tp_sh_read(in, dbg.input(0)->data.raw, dbg.input(0)->bytes) != 0) return -1;
  if (dbg.Invoke() != kTfLiteOk) return -1;
  for (uint32_t i = 0; i < TINYPREC_DUMP_TENSORS; ++i) {
    TfLiteEvalTensor* t = dbg.GetTensor(static_cast<int>(i));
    size_t bytes = 0;
    if (t == nullptr || t->data.data == nullptr || tflite::TfLiteEvalTensorByteLength(t, &bytes) != kTfLiteOk) continue;
    const uint32_t header[2] = {i, static_cast<uint32_t>(bytes)};
    if (tp_sh_write(out, header, sizeof(header)) != 0 || tp_sh_write(out, t->data.data, bytes) != 0) return -1;
  }
  tp_sh_close(in);
  tp_sh_close(out);
  return 1;
}
#endif

// Streams the samples of the input file named on the command line (argv[1]) through the model;
// outputs go to argv[2], tick counts to argv[3]. Returns the number of samples, or -1 on an I/O error.
template <typename Resolver>
inline int Stream(tflite::MicroInterpreter& interpreter, const tflite::Model* model, const Resolver& resolver) {
  char* argv[4] = {nullptr, nullptr, nullptr, nullptr};
  if (Args(argv, 4) < 4) return 0;  // no sample files: golden vectors only
#ifdef TINYPREC_DUMP_TENSORS
  return DumpTensors(model, resolver, argv);
#else
  (void)model;
  (void)resolver;
#endif
  const int in = tp_sh_open(argv[1], kOpenReadBinary);
  const int out = tp_sh_open(argv[2], kOpenWriteBinary);
  const int tick_file = tp_sh_open(argv[3], kOpenWriteBinary);
  if (in < 0 || out < 0 || tick_file < 0) {
    Say("error cannot open %s, %s or %s", argv[1], argv[2], argv[3]);
    return -1;
  }
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  int count = 0;
  while (tp_sh_read(in, input->data.raw, input->bytes) == 0) {
    uint64_t ticks = 0;
    if (TimedInvoke(interpreter, &ticks) != kTfLiteOk) {
      Say("error invoke failed on sample %d", count);
      return -1;
    }
    if (tp_sh_write(out, output->data.raw, output->bytes) != 0 || tp_sh_write(tick_file, &ticks, sizeof(ticks)) != 0) {
      Say("error writing the outputs of sample %d", count);
      return -1;
    }
    ++count;
  }
  tp_sh_close(in);
  tp_sh_close(out);
  tp_sh_close(tick_file);
  return count;
}

inline void Finish() { Say("stack %lu %lu", static_cast<unsigned long>(tp_stack_used()), static_cast<unsigned long>(tp_stack_size())); }

}  // namespace tinyprec_harness

#endif  // TINYPREC_MCU_HARNESS_H_
