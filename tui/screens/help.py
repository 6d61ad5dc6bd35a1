"""The help screen (``?``): keys and what each panel shows."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# migprof keys

| key | action |
|---|---|
| `space` | play / pause (live: freeze / unfreeze the display) |
| `+` `-` | replay speed up / down (0.1x … 1000x) |
| `.` `,` | step to the next / previous convergence check |
| `>` `<` | step to the next / previous dirty-bitmap pass |
| `home` `end` | jump to the start / end of the input |
| `g` | jump to a time (seconds from the migration's start: `1.5`, `250ms`) |
| click on the seek bar | jump there |
| `l` | log / linear scale of the chart |
| `m` | next migration (when the input holds several); `M` follow the latest |
| `/` | filter the event log (words must all match; `-word` excludes) |
| `escape` | leave the filter box |
| `d` `e` `v` `h` | show the Devices / Events / Verdict / Health tab |
| `ctrl+p` | command palette |
| `?` | this help |
| `q` | quit |

# Panels

* **Header**: mode (LIVE / REPLAY with speed), outcome, phase, elapsed, downtime so far;
  the verdict in one line beneath.
* **Chart**: pending bytes at each convergence check (white), the switch-over threshold
  (red, dashed step line), and each device's pending (RAM green, VFIO devices in colour).
  Marks on the time axis: `╵` dirty-bitmap pass, `P` parameter change, `S` switch-over.
* **Timeline**: setup, pre-copy (with its pass count), stop-and-copy, complete; VFIO
  device states beneath (italic: a requested state not yet confirmed).
* **Devices**: per device: state, pre-copy bytes, initial / dirty pending, pre-copy rate,
  stop-copy bytes (`~` = the device's own estimate), time and share of downtime, mean
  `data_fd` read latency (BPF).
* **Verdict**: converged or not, the smallest gap to the threshold, dirty rate vs.
  bandwidth, and the downtime limit or bandwidth that would close the gap.
* **Events**: newest events up to the cursor. **Health**: events, lost events, sources
  active, model update time, input warnings.

Press `escape`, `q` or `?` to close.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

    def action_dismiss(self) -> None:
        self.dismiss(None)
