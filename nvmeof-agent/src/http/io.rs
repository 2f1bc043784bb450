//! Streams under HTTP. [`WriteTimeout`]: writes fail once they have made no progress for a
//! while, so that a client that sends a request and never reads the answer holds a connection
//! (and its slot under `--web.max-connections`) for a bounded time only. [`Rewind`] and
//! [`read_head`]: the first bytes of a connection read ahead, to tell what the client speaks
//! (an HTTP/2 preface, plain HTTP on the TLS port) before HTTP or TLS takes the stream;
//! [`answer_and_close`] answers such a client the way Go's server does.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct WriteTimeout<S> {
    inner: S,
    timeout: Duration,
    /// Running while a write (or flush, or shutdown) is pending; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub fn new(inner: S, timeout: Duration) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// Passes a ready result through (clearing the stall timer), or a pending one until the
    /// timer fires.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {timeout:?}"),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, r)
    }
}

/// A stream whose first bytes were read ahead, given back before the rest.
pub struct Rewind<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Rewind {
            head,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            if self.pos == self.head.len() {
                self.head = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the first bytes of `stream` until `decided` says they are enough to tell what the
/// client speaks, the client stops sending (end of stream), or `timeout` passes (then an error:
/// a client that sends nothing is dropped, as by the header timeout). What was read is returned
/// whole, for a [`Rewind`]: a read may bring more than was needed.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    decided: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while !decided(&head) {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, io::Error>(())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map(|()| head),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no request within {timeout:?}"),
        )),
    }
}

/// How long [`answer_and_close`] reads on after its answer (Go's server waits 500 ms too).
const LINGER: Duration = Duration::from_millis(500);

/// Writes `answer`, shuts the writing side and reads (and drops) what the client still sends
/// for a moment before closing: closing a socket with unread data makes the kernel send a
/// reset, which may destroy the answer before the client reads it.
pub async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let written = async {
        stream.write_all(answer).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(LINGER, written).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = [0u8; 4096];
        let mut left = 64usize << 10;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_ahead_head_is_given_back_first() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        far.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let head = read_head(&mut near, |h| h.len() >= 3, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(head.starts_with(b"GET"), "{head:?}");
        far.write_all(b"rest").await.unwrap();
        drop(far);
        let mut all = Vec::new();
        Rewind::new(head, near).read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\nrest");
        // Nothing sent: an error after the timeout, not a wait forever.
        let (mut near, _far) = tokio::io::duplex(1024);
        let e = read_head(&mut near, |h| !h.is_empty(), Duration::from_millis(100)).await;
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_stalled_write_fails_after_the_timeout_and_progress_resets_it() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut w = WriteTimeout::new(near, Duration::from_millis(200));
        // Progress: a reader drains as the writer writes, for longer than the timeout.
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 8 * 1024];
            for chunk in got.chunks_mut(1024) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                far.read_exact(chunk).await.unwrap();
            }
            far
        });
        w.write_all(&[1u8; 8 * 1024]).await.unwrap();
        let _far = reader.await.unwrap();
        // No reader: the buffer fills, then the write fails within the bound.
        let start = std::time::Instant::now();
        let err = w.write_all(&[2u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
