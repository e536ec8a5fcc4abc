//! `Transfer-Encoding: chunked`, decoded as it arrives (RFC 9112 §7.1).

use core::ops::Range;

use super::response::{Error, Limits};

/// The longest chunk-size line (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// A streaming decoder: every byte is looked at once, data is handed out
/// in runs (ranges of the input). Extensions and trailers are read and
/// dropped; bare LF line ends are accepted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunked {
    state: Chunk,
    /// Bytes of the current chunk-size line.
    line: usize,
    /// Bytes of the trailer section.
    trailer: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size.
    Size { value: u64, digits: u8 },
    /// After the size: extensions, up to the line feed.
    Ext { value: u64 },
    /// A carriage return after the size; a line feed must follow.
    SizeLf { value: u64 },
    /// Chunk data still to come.
    Data(usize),
    /// The line end after chunk data.
    DataCr,
    /// The line feed after chunk data's carriage return.
    DataLf,
    /// Trailer lines; `empty` while the current line has no byte yet.
    Trailer { empty: bool },
    /// The last chunk and trailers are read.
    Done,
}

impl Chunked {
    pub(super) const fn new() -> Chunked {
        Chunked {
            state: Chunk::Size { value: 0, digits: 0 },
            line: 0,
            trailer: 0,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Decodes from `input`: the bytes used, and the next run of data in
    /// them if there is one (decoding stops after it). `body` counts the
    /// data so far, against `limits.body`.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        body: &mut usize,
        limits: Limits,
    ) -> Result<(usize, Option<Range<usize>>), Error> {
        let bad = Error::Malformed;
        let mut i = 0;
        while i < input.len() && !self.done() {
            if let Chunk::Data(left) = self.state {
                let n = left.min(input.len() - i);
                self.state = if n == left {
                    Chunk::DataCr
                } else {
                    Chunk::Data(left - n)
                };
                *body += n;
                return Ok((i + n, Some(i..i + n)));
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                Chunk::Size { value, digits } => {
                    self.line += 1;
                    match b {
                        b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                            if digits == 16 {
                                return Err(bad);
                            }
                            let d = match b {
                                b'0'..=b'9' => b - b'0',
                                b'a'..=b'f' => b - b'a' + 10,
                                _ => b - b'A' + 10,
                            };
                            Chunk::Size {
                                value: value << 4 | u64::from(d),
                                digits: digits + 1,
                            }
                        }
                        _ if digits == 0 => return Err(bad),
                        b';' | b' ' | b'\t' => Chunk::Ext { value },
                        b'\r' => Chunk::SizeLf { value },
                        b'\n' => self.size_line_done(value, *body, limits)?,
                        _ => return Err(bad),
                    }
                }
                Chunk::Ext { value } => {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(bad);
                    }
                    match b {
                        b'\n' => self.size_line_done(value, *body, limits)?,
                        _ => Chunk::Ext { value },
                    }
                }
                Chunk::SizeLf { value } => match b {
                    b'\n' => self.size_line_done(value, *body, limits)?,
                    _ => return Err(bad),
                },
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size { value: 0, digits: 0 },
                    _ => return Err(bad),
                },
                Chunk::DataLf => match b {
                    b'\n' => Chunk::Size { value: 0, digits: 0 },
                    _ => return Err(bad),
                },
                Chunk::Trailer { empty } => match b {
                    b'\n' if empty => Chunk::Done,
                    b'\n' => Chunk::Trailer { empty: true },
                    b'\r' => Chunk::Trailer { empty },
                    _ => {
                        self.trailer += 1;
                        if self.trailer > limits.head {
                            return Err(Error::HeadTooLarge);
                        }
                        Chunk::Trailer { empty: false }
                    }
                },
                // Handled above the match.
                Chunk::Data(_) | Chunk::Done => return Err(bad),
            };
        }
        Ok((i, None))
    }

    fn size_line_done(&mut self, size: u64, have: usize, limits: Limits) -> Result<Chunk, Error> {
        self.line = 0;
        if size == 0 {
            return Ok(Chunk::Trailer { empty: true });
        }
        match usize::try_from(size) {
            Ok(n) if n <= limits.body.saturating_sub(have) => Ok(Chunk::Data(n)),
            _ => Err(Error::BodyTooLarge),
        }
    }
}
