//! One replication connection: frames out through a writer task (which batches whatever is
//! queued into one socket write), frames in through a reader task. Dropping every sender closes
//! the connection; the reader reports the end with `None`.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::wire::Msg;

/// Sends frames on a connection.
pub type Sender = mpsc::UnboundedSender<Msg>;
/// Frames received; `None` once the connection ended (closed, reset, or a bad frame).
pub type Receiver = mpsc::UnboundedReceiver<Option<Msg>>;

/// Starts the tasks of a connection.
pub fn spawn(stream: TcpStream) -> (Sender, Receiver) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Msg>();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(m) = out_rx.recv().await {
            m.encode(&mut buf);
            while let Ok(m) = out_rx.try_recv() {
                m.encode(&mut buf);
                if buf.len() > 4 << 20 {
                    break;
                }
            }
            if wr.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(64 << 10);
        loop {
            loop {
                match Msg::decode(&buf) {
                    Ok(Some((m, used))) => {
                        let _ = buf.split_to(used);
                        if in_tx.send(Some(m)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("replication connection: bad frame: {e}");
                        let _ = in_tx.send(None);
                        return;
                    }
                }
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = in_tx.send(None);
                    return;
                }
                Ok(_) => {}
            }
        }
    });
    (out_tx, in_rx)
}
