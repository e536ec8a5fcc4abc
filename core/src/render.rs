//! One rendering for every log line, two outputs.
//!
//! Events and errors describe themselves once, to a [`Sink`] that accepts
//! text pieces and integers. [`core::fmt::Display`] is a sink over a
//! `Formatter` (used with `log` on hosts); with the `defmt` feature,
//! `defmt::Format` is a sink over a `defmt::Formatter` that writes the same
//! pieces with `{=str}` / `{=u64}`. Both therefore print the same words by
//! construction, and the firmware path needs no `core::fmt` machinery.

use core::fmt;

/// Receives the pieces of a rendered line.
pub trait Sink {
    /// A piece of text.
    fn text(&mut self, s: &str);
    /// An unsigned integer, in decimal.
    fn num(&mut self, n: u64);
    /// A piece of the line's fixed words (a literal of the core's): the
    /// same as [`Sink::text`] of [`Words::as_str`] unless the sink has a
    /// cheaper way to say it (defmt: the interned string's index).
    fn words(&mut self, w: Words) {
        self.text(w.as_str());
    }
    /// A value someone else chose — a room, a job or task name, an error
    /// text, the server's `detail`, a command's output — written with its
    /// control characters and line separators escaped ([`escaped`]), so
    /// that no value can end a log line and forge the next one.
    fn value(&mut self, s: &str) {
        escaped(s, self);
    }
}

/// Is `c` escaped in a [`Sink::value`]? Control characters (C0, DEL, C1:
/// newlines, carriage returns, tabs, the terminal's escape) and Unicode's
/// line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Write `s` into `out` as [`Sink::text`] pieces, with every character
/// `needs_escape` says so written as `\n`, `\r`, `\t` or `\u{…}` (its
/// code point in hex): one line whatever `s` holds. Other characters,
/// backslashes included, pass unchanged.
pub fn escaped<S: Sink + ?Sized>(s: &str, out: &mut S) {
    let mut clean = 0;
    for (i, c) in s.char_indices() {
        if !needs_escape(c) {
            continue;
        }
        if let Some(run) = s.get(clean..i).filter(|r| !r.is_empty()) {
            out.text(run);
        }
        clean = i + c.len_utf8();
        match c {
            '\n' => out.text("\\n"),
            '\r' => out.text("\\r"),
            '\t' => out.text("\\t"),
            c => {
                let mut buf = *b"\\u{000000}";
                let mut n = c as u32;
                let mut digits = 0;
                let mut tmp = [0u8; 6];
                loop {
                    let d = (n % 16) as u8;
                    tmp[digits] = if d < 10 { b'0' + d } else { b'a' + d - 10 };
                    digits += 1;
                    n /= 16;
                    if n == 0 {
                        break;
                    }
                }
                for k in 0..digits {
                    buf[3 + k] = tmp[digits - 1 - k];
                }
                buf[3 + digits] = b'}';
                // ASCII only, so this cannot fail.
                if let Ok(t) = core::str::from_utf8(&buf[..4 + digits]) {
                    out.text(t);
                }
            }
        }
    }
    if let Some(run) = s.get(clean..).filter(|r| !r.is_empty()) {
        out.text(run);
    }
}

/// A literal piece of a line, made by the core's `words!("…")`: the text,
/// and with the `defmt` feature also its `defmt::intern!`ed index as well.
///
/// A device's defmt sink writes only the index (`{=istr}`), so the words
/// stay in the ELF's `.defmt` table, which the host's decoder reads, and
/// out of flash; `Display` writes the text, so a host prints the same
/// words from the same rendering.
#[derive(Clone, Copy)]
pub struct Words {
    text: &'static str,
    #[cfg(feature = "defmt")]
    interned: defmt::Str,
}

impl Words {
    #[doc(hidden)]
    #[inline(always)]
    pub const fn new(text: &'static str, #[cfg(feature = "defmt")] interned: defmt::Str) -> Self {
        Words {
            text,
            #[cfg(feature = "defmt")]
            interned,
        }
    }

    /// The text.
    pub const fn as_str(self) -> &'static str {
        self.text
    }
}

impl core::fmt::Debug for Words {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.text, f)
    }
}

/// `words!("…")`: a [`Words`] of a string literal.
#[cfg(feature = "defmt")]
macro_rules! words {
    ($text:literal) => {
        $crate::render::Words::new($text, defmt::intern!($text))
    };
}
/// `words!("…")`: a [`Words`] of a string literal.
#[cfg(not(feature = "defmt"))]
macro_rules! words {
    ($text:literal) => {
        $crate::render::Words::new($text)
    };
}
pub(crate) use words;

/// Something that renders itself into a [`Sink`].
pub trait Render {
    /// Write the rendering.
    fn render<S: Sink + ?Sized>(&self, out: &mut S);
}

/// Adapter: a [`Sink`] over a `core::fmt::Formatter`.
pub(crate) struct FmtSink<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    result: fmt::Result,
}

impl Sink for FmtSink<'_, '_> {
    fn text(&mut self, s: &str) {
        if self.result.is_ok() {
            self.result = self.f.write_str(s);
        }
    }
    fn num(&mut self, n: u64) {
        if self.result.is_ok() {
            self.result = fmt::Display::fmt(&n, self.f);
        }
    }
}

/// `Display` through [`Render`].
pub(crate) fn display<R: Render + ?Sized>(r: &R, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let mut sink = FmtSink { f, result: Ok(()) };
    r.render(&mut sink);
    sink.result
}

#[cfg(feature = "defmt")]
pub(crate) struct DefmtSink<'a> {
    pub(crate) f: defmt::Formatter<'a>,
}

#[cfg(feature = "defmt")]
impl Sink for DefmtSink<'_> {
    fn text(&mut self, s: &str) {
        defmt::write!(self.f, "{=str}", s);
    }
    /// Escaped by the host's decoder (`{=str:?}`: quoted, with Rust's
    /// escapes), so the device carries no escaping code.
    fn value(&mut self, s: &str) {
        defmt::write!(self.f, "{=str:?}", s);
    }
    fn num(&mut self, n: u64) {
        defmt::write!(self.f, "{=u64}", n);
    }
    // Inlined into every rendering, so that the text each `words!` also
    // carries is never referenced on a device and stays out of flash; the
    // writing itself is one function for all of them.
    #[inline(always)]
    fn words(&mut self, w: Words) {
        defmt_istr(self.f, w.interned);
    }
}

#[cfg(feature = "defmt")]
#[inline(never)]
fn defmt_istr(f: defmt::Formatter<'_>, s: defmt::Str) {
    defmt::write!(f, "{=istr}", s);
}

/// Implements `Display` (and, with the `defmt` feature, `defmt::Format`)
/// for types that implement [`Render`].
macro_rules! impl_render_outputs {
    ($($t:ty),* $(,)?) => {$(
        impl core::fmt::Display for $t {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                $crate::render::display(self, f)
            }
        }
        #[cfg(feature = "defmt")]
        impl defmt::Format for $t {
            fn format(&self, f: defmt::Formatter<'_>) {
                $crate::render::Render::render(self, &mut $crate::render::DefmtSink { f });
            }
        }
    )*};
}
pub(crate) use impl_render_outputs;

/// Renders a duration in seconds: whole seconds as `30s`, otherwise with
/// tenths (`2.5s`), rounded down. Used for every duration in a log line.
pub struct Secs(pub crate::Duration);

impl Render for Secs {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        let ms = self.0.as_millis();
        out.num(ms / 1000);
        let tenths = (ms % 1000) / 100;
        if tenths != 0 {
            out.words(words!("."));
            out.num(tenths);
        }
        out.words(words!("s"));
    }
}

/// Renders whole seconds, rounded down (`30s` for 30.9 s): for "elapsed".
pub struct WholeSecs(pub crate::Duration);

impl Render for WholeSecs {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        out.num(self.0.as_secs());
        out.words(words!("s"));
    }
}

/// Renders a short duration exactly: `30ms` below a second, else
/// seconds with hundredths (`1.25s`). For how long a task ran.
pub struct Took(pub crate::Duration);

impl Render for Took {
    fn render<S: Sink + ?Sized>(&self, out: &mut S) {
        let ms = self.0.as_millis();
        if ms < 1000 {
            out.num(ms);
            out.words(words!("ms"));
            return;
        }
        out.num(ms / 1000);
        let hundredths = (ms % 1000) / 10;
        out.words(if hundredths < 10 {
            words!(".0")
        } else {
            words!(".")
        });
        out.num(hundredths);
        out.words(words!("s"));
    }
}

impl_render_outputs!(Secs, WholeSecs, Took);

/// A [`Sink`] that writes into a fixed buffer, truncating when it is full.
/// Lets a no-heap caller render a line into a `heapless::String`.
impl<const N: usize> Sink for heapless::String<N> {
    fn text(&mut self, s: &str) {
        for c in s.chars() {
            if self.push(c).is_err() {
                return;
            }
        }
    }
    fn num(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Digits are ASCII, so this cannot fail.
        if let Ok(s) = core::str::from_utf8(&digits[i..]) {
            self.text(s);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::Duration;
    use std::string::ToString;

    #[test]
    fn seconds_render() {
        assert_eq!(Secs(Duration::from_secs(120)).to_string(), "120s");
        assert_eq!(Secs(Duration::from_millis(2_500)).to_string(), "2.5s");
        assert_eq!(Secs(Duration::from_millis(999)).to_string(), "0.9s");
        assert_eq!(WholeSecs(Duration::from_millis(30_999)).to_string(), "30s");
    }

    struct Pieces(std::string::String);
    impl Sink for Pieces {
        fn text(&mut self, s: &str) {
            self.0.push_str(s);
        }
        fn num(&mut self, n: u64) {
            self.0.push_str(&n.to_string());
        }
    }

    fn value(s: &str) -> std::string::String {
        let mut p = Pieces(std::string::String::new());
        p.value(s);
        p.0
    }

    #[test]
    fn values_cannot_break_a_line() {
        assert_eq!(value("room1"), "room1");
        assert_eq!(value(""), "");
        assert_eq!(
            value("r\nERROR Server unreachable"),
            "r\\nERROR Server unreachable"
        );
        assert_eq!(value("a\r\tb\\c"), "a\\r\\tb\\c");
        assert_eq!(value("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(value("\0"), "\\u{0}");
        assert_eq!(
            value("x\u{7f}\u{85}\u{2028}\u{2029}y"),
            "x\\u{7f}\\u{85}\\u{2028}\\u{2029}y"
        );
        assert_eq!(value("é ünïcode ✓"), "é ünïcode ✓");
        for s in ["\n", "a\nb\n", "\r\n\r\n", "\u{10ffff}\u{9f}"] {
            let v = value(s);
            assert!(!v.chars().any(needs_escape), "{v:?}");
        }
    }

    #[test]
    fn heapless_sink_matches_display_and_truncates() {
        let mut s: heapless::String<32> = heapless::String::new();
        Secs(Duration::from_millis(12_300)).render(&mut s);
        assert_eq!(s.as_str(), "12.3s");
        let mut small: heapless::String<3> = heapless::String::new();
        small.num(123_456);
        assert_eq!(small.as_str(), "123");
        let mut zero: heapless::String<3> = heapless::String::new();
        zero.num(0);
        assert_eq!(zero.as_str(), "0");
    }
}
