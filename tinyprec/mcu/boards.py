"""Board profiles: core, clock, RAM and flash from the vendors' datasheets, and the fits verdict.

RAM is the on-chip SRAM (all banks; the largest contiguous block for the arena may be smaller);
flash is on-chip flash, or the flash chip of the named development board where the MCU has none.
"""

from __future__ import annotations

from dataclasses import dataclass

from tinyprec.errors import DataError

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Board:
    """One microcontroller (board) as the resource checks see it."""

    name: str
    mcu: str
    core: str  # a key of tinyprec.mcu.latency.CORES
    mhz: float
    ram_bytes: int
    flash_bytes: int
    note: str = ""

    @property
    def target(self) -> str:
        """The latency target string for this board's core at its clock."""
        return f"{self.core}@{self.mhz:g}"


BOARDS: dict[str, Board] = {
    "nrf52840": Board("nrf52840", "Nordic nRF52840", "cortex-m4", 64.0, 256 * KIB, 1 * MIB,
                      "Cortex-M4F; e.g. Arduino Nano 33 BLE Sense"),
    "stm32l4r5": Board("stm32l4r5", "ST STM32L4R5ZI", "cortex-m4", 120.0, 640 * KIB, 2 * MIB,
                       "Cortex-M4F; Nucleo-L4R5ZI, the MLPerf Tiny reference board"),
    "stm32h7a3": Board("stm32h7a3", "ST STM32H7A3ZI", "cortex-m7", 280.0, 1400 * KIB, 2 * MIB,
                       "Cortex-M7; about 1.4 MB RAM in several banks (incl. 192 KB TCM)"),
    "rp2040": Board("rp2040", "Raspberry Pi RP2040", "cortex-m0plus", 133.0, 264 * KIB, 2 * MIB,
                    "dual Cortex-M0+; no on-chip flash: 2 MB QSPI flash on the Raspberry Pi Pico"),
    "esp32s3": Board("esp32s3", "Espressif ESP32-S3", "xtensa-lx7", 240.0, 512 * KIB, 8 * MIB,
                     "dual Xtensa LX7; external flash: 8 MB on ESP32-S3-DevKitC-1-N8"),
}


def get_board(name: str) -> Board:
    """The board profile named ``name`` (case-insensitive; '-' and '_' ignored). Raises DataError."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in BOARDS:
        raise DataError(f"unknown board '{name}'; use one of {', '.join(BOARDS)}")
    return BOARDS[key]


@dataclass(frozen=True)
class FitVerdict:
    """Does a model fit a board (and the optional budgets)? Shortfalls are in bytes, 0 when it fits."""

    board: str
    ram_needed: int
    ram_available: int
    flash_needed: int
    flash_available: int

    @property
    def ram_fits(self) -> bool:
        return self.ram_needed <= self.ram_available

    @property
    def flash_fits(self) -> bool:
        return self.flash_needed <= self.flash_available

    @property
    def fits(self) -> bool:
        return self.ram_fits and self.flash_fits

    def summary(self) -> str:
        """One line: fits / does not fit, with the use of each resource."""
        parts = []
        for what, need, have in (("RAM", self.ram_needed, self.ram_available), ("flash", self.flash_needed, self.flash_available)):
            pct = 100.0 * need / have if have else float("inf")
            over = f", over by {need - have} bytes" if need > have else ""
            parts.append(f"{what} {need}/{have} bytes ({pct:.1f}%{over})")
        return f"{self.board}: {'fits' if self.fits else 'does NOT fit'}: " + "; ".join(parts)


def check_fit(board: Board, ram_needed: int, flash_needed: int) -> FitVerdict:
    """Compare the needs with the board's RAM and flash."""
    return FitVerdict(board.name, int(ram_needed), board.ram_bytes, int(flash_needed), board.flash_bytes)


def target_for(spec: str) -> str:
    """A latency target string from a board name (its core at its clock) or a core spec as given."""
    key = spec.lower().replace("-", "").replace("_", "")
    return BOARDS[key].target if key in BOARDS else spec
