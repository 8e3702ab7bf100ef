//! A queue bounded by the bytes it holds as well as by its length: the
//! operator stream's frames differ in size by four orders of magnitude (an
//! acknowledgement against a 16 MiB log batch), so a bound in frames alone
//! bounds nothing.
//!
//! Invariants:
//! - The items queued hold at most `bytes_max` bytes as their senders
//!   declared them; a sender waits for room, nothing is dropped. An item
//!   larger than the whole budget waits for an empty queue and then goes
//!   alone, so it is never stuck.
//! - An item's bytes return to the budget when the receiver takes it.
//! - A queue made [`from_counted`](Receiver::from_counted) holds items whose
//!   bytes are already counted where they were made (frames shared with the
//!   operator's backlog); it is bounded by its length only.

use std::sync::Arc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// A queue of `items_max` items and `bytes_max` bytes at most.
pub fn channel<T>(items_max: usize, bytes_max: usize) -> (Sender<T>, Receiver<T>) {
    let (sender, receiver) = mpsc::channel(items_max);
    // Permits are taken as a `u32` at a time: the budget is one too.
    let bytes_max = u32::try_from(bytes_max.min(Semaphore::MAX_PERMITS))
        .unwrap_or(u32::MAX)
        .max(1);
    let budget = Arc::new(Semaphore::new(bytes_max as usize));
    (
        Sender {
            items: sender,
            budget,
            bytes_max,
        },
        Receiver {
            items: Items::Budgeted(receiver),
        },
    )
}

/// The sending side; see [`channel`].
pub struct Sender<T> {
    items: mpsc::Sender<(T, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    bytes_max: u32,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            items: self.items.clone(),
            budget: Arc::clone(&self.budget),
            bytes_max: self.bytes_max,
        }
    }
}

impl<T> Sender<T> {
    /// Queues `item`, which holds `bytes` bytes, once there is room for both
    /// it and its bytes; gives the item back if the receiver is gone.
    pub async fn send(&self, item: T, bytes: usize) -> Result<(), T> {
        let wanted = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, self.bytes_max);
        let Ok(permit) = Arc::clone(&self.budget).acquire_many_owned(wanted).await else {
            return Err(item);
        };
        self.items
            .send((item, permit))
            .await
            .map_err(|mpsc::error::SendError((item, _))| item)
    }

    /// Bytes free in the queue's budget now.
    pub fn bytes_free(&self) -> usize {
        self.budget.available_permits()
    }
}

enum Items<T> {
    Budgeted(mpsc::Receiver<(T, OwnedSemaphorePermit)>),
    Counted(mpsc::Receiver<T>),
}

/// The receiving side; see [`channel`].
pub struct Receiver<T> {
    items: Items<T>,
}

impl<T> Receiver<T> {
    /// A receiver of items whose bytes are counted where they were made.
    pub fn from_counted(items: mpsc::Receiver<T>) -> Receiver<T> {
        Receiver {
            items: Items::Counted(items),
        }
    }

    /// The next item, or `None` once every sender is gone and the queue is
    /// empty. Its bytes go back to the budget.
    pub async fn recv(&mut self) -> Option<T> {
        match &mut self.items {
            Items::Budgeted(items) => items.recv().await.map(|(item, _bytes)| item),
            Items::Counted(items) => items.recv().await,
        }
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        match &mut self.items {
            Items::Budgeted(items) => items.try_recv().map(|(item, _bytes)| item),
            Items::Counted(items) => items.try_recv(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_sender_waits_while_the_queued_bytes_fill_the_budget() {
        let (sender, mut receiver) = channel::<&str>(100, 10);
        sender.send("first", 6).await.unwrap();
        sender.send("second", 4).await.unwrap();
        assert_eq!(sender.bytes_free(), 0);
        // Room for items, none for bytes: the third waits.
        let third = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send("third", 5).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!third.is_finished());
        assert_eq!(receiver.recv().await, Some("first"));
        third.await.unwrap().unwrap();
        assert_eq!(receiver.try_recv(), Ok("second"));
        assert_eq!(receiver.recv().await, Some("third"));
        assert_eq!(sender.bytes_free(), 10);
    }

    #[tokio::test]
    async fn an_item_larger_than_the_budget_goes_alone_once_the_queue_is_empty() {
        let (sender, mut receiver) = channel::<u32>(100, 10);
        sender.send(1, 3).await.unwrap();
        let huge = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.send(2, 1 << 30).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!huge.is_finished());
        assert_eq!(receiver.recv().await, Some(1));
        huge.await.unwrap().unwrap();
        assert_eq!(receiver.recv().await, Some(2));
    }

    #[tokio::test]
    async fn a_budget_past_four_gibibytes_is_four_gibibytes_not_a_wrapped_one() {
        let (sender, _receiver) = channel::<u8>(1, (8usize << 30) + 5);
        assert_eq!(sender.bytes_free(), u32::MAX as usize);
    }

    #[tokio::test]
    async fn a_queue_of_counted_items_is_bounded_by_its_length_only() {
        let (sender, items) = mpsc::channel(2);
        let mut receiver = Receiver::from_counted(items);
        sender.send(7).await.unwrap();
        assert_eq!(receiver.recv().await, Some(7));
        drop(sender);
        assert_eq!(receiver.recv().await, None);
    }

    #[tokio::test]
    async fn the_item_comes_back_when_the_receiver_is_gone() {
        let (sender, receiver) = channel::<&str>(1, 10);
        drop(receiver);
        assert_eq!(sender.send("lost?", 1).await, Err("lost?"));
    }
}
