//! The messages of an attached session (`paas run` with stdin, `paas db psql` at a terminal)
//! between the CLI and the node agent. The control plane joins the CLI's and the agent's
//! upgraded HTTP/1.1 connections and copies bytes without reading them, so these frames are
//! the whole protocol end to end: a kind byte, a big-endian u32 length, the payload.
//! Our own rather than WebSocket: both ends are ours, the control plane only splices, and a
//! WebSocket crate would add a handshake, masking and a dependency for nothing the splice needs.

use tokio::io::{AsyncRead, AsyncReadExt};

/// The `Upgrade` header's protocol on both legs.
pub const UPGRADE: &str = "paas-attach/1";

/// The largest payload a frame may carry; larger is a protocol error (ends the session).
pub const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// CLI → agent: bytes for the process's stdin.
    Stdin(Vec<u8>),
    /// CLI → agent: stdin ended (the process reads end of file).
    StdinEnd,
    /// CLI → agent: the terminal's new size.
    Resize { cols: u16, rows: u16 },
    /// Agent → CLI: output (with a TTY, everything the terminal shows).
    Stdout(Vec<u8>),
    /// Agent → CLI: the process's stderr (never with a TTY, where it is the terminal's).
    Stderr(Vec<u8>),
    /// Agent → CLI: the process ended with this code; the last frame.
    Exit(i32),
    /// Agent → CLI: the session could not run or broke off, in a sentence; the last frame.
    Error(String),
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::StdinEnd => 1,
            Frame::Resize { .. } => 2,
            Frame::Stdout(_) => 3,
            Frame::Stderr(_) => 4,
            Frame::Exit(_) => 5,
            Frame::Error(_) => 6,
        }
    }

    /// The frame on the wire. Data frames over [`MAX_PAYLOAD`] must be split by the sender.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.clone(),
            Frame::StdinEnd => Vec::new(),
            Frame::Resize { cols, rows } => [cols.to_be_bytes(), rows.to_be_bytes()].concat(),
            Frame::Exit(code) => code.to_be_bytes().to_vec(),
            Frame::Error(msg) => msg.as_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// The next frame; `None` when the stream ends between frames.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        r.read_exact(&mut head[1..]).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(invalid(format!("a frame of {len} bytes is over the limit")));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        let fixed =
            |n: usize| if payload.len() == n { Ok(()) } else { Err(invalid("a frame of the wrong size")) };
        Ok(Some(match head[0] {
            0 => Frame::Stdin(payload),
            1 => Frame::StdinEnd,
            2 => {
                fixed(4)?;
                let cols = u16::from_be_bytes([payload[0], payload[1]]);
                Frame::Resize { cols, rows: u16::from_be_bytes([payload[2], payload[3]]) }
            }
            3 => Frame::Stdout(payload),
            4 => Frame::Stderr(payload),
            5 => {
                fixed(4)?;
                Frame::Exit(i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]))
            }
            6 => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            k => return Err(invalid(format!("an unknown frame kind {k}"))),
        }))
    }
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::Frame;

    #[tokio::test]
    async fn frames_round_trip_and_bad_ones_are_refused() {
        let frames = [
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::StdinEnd,
            Frame::Resize { cols: 120, rows: 40 },
            Frame::Stdout(vec![0, 255, 10]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-1),
            Frame::Error("the container could not start".into()),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut r = &wire[..];
        for f in &frames {
            assert_eq!(Frame::read(&mut r).await.unwrap().as_ref(), Some(f));
        }
        assert_eq!(Frame::read(&mut r).await.unwrap(), None);
        // Cut mid-frame, oversized, wrong size, unknown kind.
        let cut = &Frame::Stdout(b"abc".to_vec()).encode()[..6];
        assert!(Frame::read(&mut &cut[..]).await.is_err());
        let big = [3u8, 0x7f, 0, 0, 0];
        assert!(Frame::read(&mut &big[..]).await.is_err());
        let short_exit = [5u8, 0, 0, 0, 1, 0];
        assert!(Frame::read(&mut &short_exit[..]).await.is_err());
        assert!(Frame::read(&mut &[9u8, 0, 0, 0, 0][..]).await.is_err());
    }
}
