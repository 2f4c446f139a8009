//! One client connection: a reader that parses requests and stages them in
//! arrival order, and a writer that sends their responses in that same
//! order. Up to `MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION` requests may be in
//! flight; past that the reader waits (back-pressure). Anything malformed
//! closes this connection only.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::net::TcpStream;
use tracing::{Instrument, debug, warn};

use crate::config::{MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION, STAGED_BYTES_PER_SHARD_MAX};
use crate::protocol::codec::{self, Parsed, ProtocolError};
use crate::protocol::dispatch::{PendingResponse, dispatch};
use crate::shard::Shard;
use crate::storage::Foreground;

#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    shard.connection_opened();
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%peer, %error, "set_nodelay failed");
    }
    match writer_half(&stream) {
        Ok(writer) => {
            let (sender, receiver) =
                local_channel::new_bounded(MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION);
            let writer_task = glommio::spawn_local(
                write_responses(writer, receiver, peer, shard.commit.foreground().clone())
                    .in_current_span(),
            );
            if let Err(error) = read_requests(&shard, stream, &sender, peer).await {
                match error {
                    ConnectionError::Protocol(e) => warn!(%peer, error = %e, "closing connection"),
                    ConnectionError::Io(e) => debug!(%peer, error = %e, "connection read ended"),
                }
            }
            drop(sender);
            writer_task.await;
        }
        Err(error) => warn!(%peer, %error, "could not set up the connection"),
    }
    shard.connection_closed();
}

/// A second handle on the same socket, so reads and writes proceed
/// independently.
fn writer_half(stream: &TcpStream) -> std::io::Result<TcpStream> {
    // SAFETY: `dup` returns a new descriptor for the same socket that nobody
    // else owns; the new TcpStream takes ownership and closes it on drop.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a valid, open, exclusively owned socket descriptor.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

async fn read_requests(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    responses: &local_channel::LocalSender<PendingResponse>,
    peer: SocketAddr,
) -> Result<(), ConnectionError> {
    let max = shard.config.socket_request_max_bytes;
    loop {
        if shard.is_shutting_down() {
            return Ok(());
        }
        // Back-pressure: a shard whose disk is behind stops reading.
        future::or(
            shard.commit.wait_for_room(STAGED_BYTES_PER_SHARD_MAX),
            shard.shutdown.notified(),
        )
        .await;
        if shard.is_shutting_down() {
            return Ok(());
        }
        let read = future::or(
            async { read_frame(&mut stream, max).await.map(Some) },
            async {
                shard.shutdown.notified().await;
                Ok(None)
            },
        )
        .await?;
        let Some(Some(frame)) = read else {
            return Ok(());
        };
        let pending: PendingResponse = match codec::parse(frame.freeze())? {
            Parsed::Request(request) => dispatch(shard, *request, peer.ip()),
            Parsed::ApiVersionsUnsupported { correlation_id } => {
                let response = codec::api_versions_unsupported(correlation_id);
                Box::pin(async move { response.map(|frame| Some(vec![frame])) })
            }
        };
        if responses.send(pending).await.is_err() {
            // The writer has gone: the peer closed or a write failed.
            return Ok(());
        }
    }
}

/// Reads one frame; `None` at a clean end of stream.
async fn read_frame(
    stream: &mut TcpStream,
    max: usize,
) -> Result<Option<BytesMut>, ConnectionError> {
    let mut size = [0u8; 4];
    match stream.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = codec::check_frame_size(i32::from_be_bytes(size), max)?;
    Ok(Some(read_body(stream, size).await?))
}

/// Reads exactly `size` bytes straight into a new buffer's spare capacity,
/// so the bytes of a produced batch are not zeroed before the socket
/// overwrites them (that memset was 6.7% of the broker's CPU at max
/// produce rate, perf/RESULTS.md).
async fn read_body(stream: &mut TcpStream, size: usize) -> std::io::Result<BytesMut> {
    let mut body = BytesMut::with_capacity(size);
    let fd = stream.as_raw_fd();
    while body.len() < size {
        let wanted = size - body.len();
        let spare = &mut body.spare_capacity_mut()[..wanted];
        // SAFETY: `spare` is memory this buffer owns, `wanted` bytes long;
        // recv writes at most that many bytes into it and reads none.
        let received =
            unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), wanted, libc::MSG_DONTWAIT) };
        match usize::try_from(received) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(received) => {
                // SAFETY: recv initialised `received` (at most `wanted`)
                // bytes right after the buffer's length.
                unsafe { body.set_len(body.len() + received) };
            }
            Err(_) => {
                let error = std::io::Error::last_os_error();
                match error.kind() {
                    std::io::ErrorKind::WouldBlock => {
                        // Nothing there yet: wait on the ring until there is.
                        if stream.peek(&mut [0u8; 1]).await? == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    std::io::ErrorKind::Interrupted => {}
                    _ => return Err(error),
                }
            }
        }
    }
    Ok(body)
}

/// Below this size a multi-slice frame is gathered into one buffer: one
/// small copy costs less than a write per slice.
const GATHER_BYTES_MAX: usize = 64 * 1024;

async fn write_frame(stream: &mut TcpStream, slices: &[bytes::Bytes]) -> std::io::Result<()> {
    let total: usize = slices.iter().map(|s| s.len()).sum();
    if slices.len() > 1 && total <= GATHER_BYTES_MAX {
        return stream.write_all(&slices.concat()).await;
    }
    for slice in slices {
        stream.write_all(slice).await?;
    }
    Ok(())
}

async fn write_responses(
    mut stream: TcpStream,
    pending: LocalReceiver<PendingResponse>,
    peer: SocketAddr,
    foreground: Rc<Foreground>,
) {
    while let Some(response) = pending.recv().await {
        let slices = match response.await {
            Ok(Some(slices)) => slices,
            Ok(None) => continue,
            Err(error) => {
                warn!(%peer, %error, "closing connection");
                break;
            }
        };
        // Until the socket has it, the response counts as the shard's
        // foreground work: a produce request stopped counting when its
        // answer was ready, and the log cleaner must not step in between.
        let _in_flight = foreground.begin();
        if let Err(error) = write_frame(&mut stream, &slices).await {
            debug!(%peer, %error, "connection write failed");
            break;
        }
    }
    // Wake the reader if it is still blocked on this socket.
    let _ = stream.shutdown(std::net::Shutdown::Both).await;
}
