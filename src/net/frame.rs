//! Framing shared by every aspen protocol: one message is a big-endian `u32` length followed by
//! that many bytes of postcard. A frame over the limit is refused before it is read, its
//! buffer grows as its bytes arrive (a length announced and never sent costs nothing), and a
//! frame that does not decode is reported, never panicked on.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {bytes} bytes exceeds the limit of {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("stream ended before a whole frame")]
    Truncated,
    #[error("stream error: {0}")]
    Io(String),
}

/// Writes `value` as one frame; refuses (writing nothing) when it would exceed `max` bytes.
pub async fn write_frame<W, T>(writer: &mut W, value: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let frame = encode_bytes(value)?;
    let payload = frame.len() - 4;
    if payload > max {
        return Err(FrameError::TooLarge {
            bytes: payload as u64,
            max: max as u64,
        });
    }
    writer
        .write_all(&frame)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

/// Reads one frame of at most `max` bytes and decodes it.
pub async fn read_frame<R, T>(reader: &mut R, max: usize) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let payload = read_frame_payload(reader, max).await?;
    postcard::from_bytes(&payload).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Reads one frame of at most `max` bytes, undecoded.
pub async fn read_frame_payload<R>(reader: &mut R, max: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    reader.read_exact(&mut header).await.map_err(io_error)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            bytes: len as u64,
            max: max as u64,
        });
    }
    // Grown as bytes arrive: the announced length is only a bound until they do.
    let mut payload = Vec::with_capacity(len.min(FIRST_READ_BYTES));
    let read = (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await
        .map_err(io_error)?;
    if read < len {
        return Err(FrameError::Truncated);
    }
    Ok(payload)
}

/// The buffer a frame starts with; larger frames grow it as their bytes arrive.
const FIRST_READ_BYTES: usize = 64 * 1024;

/// Decodes the first frame in `data` with [`read_frame`], as a node reads it from a stream.
pub fn decode_bytes<T: DeserializeOwned>(data: &[u8], max: usize) -> Result<T, FrameError> {
    futures::executor::block_on(read_frame(&mut &data[..], max))
}

/// `value` as one frame: length, then postcard, whatever its size ([`write_frame`] checks it).
pub fn encode_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_stdvec(value).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    Ok(frame)
}

fn io_error(error: std::io::Error) -> FrameError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a frame round-trips, and that oversized, truncated and undecodable frames each
    // come back as their own error instead of a panic or a hang.
    #[tokio::test]
    async fn frames() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &(7u32, "seven".to_string()), 64)
            .await
            .unwrap();
        let got: (u32, String) = read_frame(&mut b, 64).await.unwrap();
        assert_eq!(got, (7, "seven".to_string()));

        let big = vec![0u8; 100];
        assert_eq!(
            write_frame(&mut a, &big, 64).await,
            Err(FrameError::TooLarge {
                bytes: 101,
                max: 64
            })
        );
        a.write_all(&1000u32.to_be_bytes()).await.unwrap();
        assert_eq!(
            read_frame::<_, Vec<u8>>(&mut b, 64).await,
            Err(FrameError::TooLarge {
                bytes: 1000,
                max: 64
            })
        );

        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame::<_, String>(&mut b, 64).await,
            Err(FrameError::Malformed(_))
        ));
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        assert_eq!(
            read_frame::<_, Vec<u8>>(&mut b, 64).await,
            Err(FrameError::Truncated)
        );
    }

    // Proves a frame's buffer follows the bytes that arrived, not the length announced: a
    // header announcing 16 MiB followed by 10 bytes holds a small buffer while it waits.
    #[tokio::test]
    async fn a_frame_buffer_grows_as_bytes_arrive() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let announced: u32 = 16 << 20;
        a.write_all(&announced.to_be_bytes()).await.unwrap();
        a.write_all(&[7u8; 10]).await.unwrap();
        drop(a);
        assert_eq!(
            read_frame_payload(&mut b, 16 << 20).await,
            Err(FrameError::Truncated)
        );
        let mut small = &[0u8, 0, 0, 3, 1, 2, 3][..];
        let payload = read_frame_payload(&mut small, 16 << 20).await.unwrap();
        assert_eq!(payload, vec![1, 2, 3]);
        assert!(payload.capacity() <= FIRST_READ_BYTES);
    }
}
