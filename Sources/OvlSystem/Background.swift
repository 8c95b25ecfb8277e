import Glibc

/// One background thread that runs submitted jobs in order: the system calls of one part
/// of a job (writing files) overlap the computation of another (parsing and hashing a
/// layer). `submit` blocks while `limit` jobs wait; `wait` returns when every job submitted
/// so far has run, and its return orders the jobs' writes before what the caller does next.
/// The corresponding C functions are `pthread_create`, `pthread_mutex_*`, `pthread_cond_*`.
public final class BackgroundQueue: @unchecked Sendable {
  public typealias Job = @Sendable () -> Void
  private let limit: Int
  /// The thread is woken when this many jobs wait (or by `wait`): one wake-up per batch of
  /// small jobs, not per job. A caller that stops submitting at a backlog below this would
  /// leave the thread asleep.
  private let wakeBatch: Int
  private var jobs: [Job] = []
  private var unfinished = 0
  private var closing = false
  private var workerIdle = false
  private var callerWaiting = false
  private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
  /// Signalled for the thread (work or closing) and for the caller (room or all done).
  private let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  private let progress = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
  private var thread = pthread_t()
  private var started = false

  /// nil when the thread cannot be started (the caller then runs jobs itself).
  public init?(limit: Int) {
    self.limit = max(1, limit)
    wakeBatch = max(1, limit / 32)
    pthread_mutex_init(mutex, nil)
    pthread_cond_init(work, nil)
    pthread_cond_init(progress, nil)
    guard let thread = startThread({ [self] in runJobs() }) else { return nil }
    self.thread = thread
    started = true
  }

  /// Stops the thread after the jobs already submitted; call once, before dropping the queue.
  public func close() {
    pthread_mutex_lock(mutex)
    closing = true
    pthread_cond_signal(work)
    pthread_mutex_unlock(mutex)
    if started {
      pthread_join(thread, nil)
      started = false
    }
  }

  deinit {
    pthread_cond_destroy(work)
    pthread_cond_destroy(progress)
    pthread_mutex_destroy(mutex)
    work.deallocate()
    progress.deallocate()
    mutex.deallocate()
  }

  public func submit(_ job: @escaping Job) {
    pthread_mutex_lock(mutex)
    while jobs.count >= limit {
      if workerIdle { pthread_cond_signal(work) }
      callerWaiting = true
      pthread_cond_wait(progress, mutex)
    }
    append(job)
    pthread_mutex_unlock(mutex)
  }

  /// Submits `job` unless `backlog` jobs or more wait for the thread (false: not taken; a
  /// caller with work it can do itself does it while the thread is behind). One lock.
  public func submit(_ job: @escaping Job, ifBacklogBelow backlog: Int) -> Bool {
    pthread_mutex_lock(mutex)
    defer { pthread_mutex_unlock(mutex) }
    guard jobs.count < min(backlog, limit) else { return false }
    append(job)
    return true
  }

  /// Under the lock.
  private func append(_ job: @escaping Job) {
    jobs.append(job)
    unfinished += 1
    if workerIdle && jobs.count >= wakeBatch { pthread_cond_signal(work) }
  }

  /// Returns when every job submitted before has finished.
  public func wait() {
    pthread_mutex_lock(mutex)
    while unfinished > 0 {
      if workerIdle { pthread_cond_signal(work) }
      callerWaiting = true
      pthread_cond_wait(progress, mutex)
    }
    pthread_mutex_unlock(mutex)
  }

  private func runJobs() {
    pthread_mutex_lock(mutex)
    while true {
      while jobs.isEmpty && !closing {
        workerIdle = true
        pthread_cond_wait(work, mutex)
        workerIdle = false
      }
      if jobs.isEmpty { break }
      let batch = jobs
      jobs = []
      jobs.reserveCapacity(limit)
      wakeCaller()
      pthread_mutex_unlock(mutex)
      for job in batch { job() }
      pthread_mutex_lock(mutex)
      unfinished -= batch.count
      wakeCaller()
    }
    pthread_mutex_unlock(mutex)
  }

  private func wakeCaller() {
    if callerWaiting {
      callerWaiting = false
      pthread_cond_signal(progress)
    }
  }
}

/// A new thread running `body` (the only way to start one: `pthread_create` takes a C
/// function, so the closure travels as its context); nil when the thread cannot start.
func startThread(_ body: @escaping () -> Void) -> pthread_t? {
  var thread = pthread_t()
  let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
  let status = pthread_create(&thread, nil, { raw in
    guard let raw else { return nil }
    Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().run()
    return nil
  }, context)
  guard status == 0 else {
    Unmanaged<ThreadBody>.fromOpaque(context).release()
    return nil
  }
  return thread
}

private final class ThreadBody {
  let run: () -> Void
  init(_ run: @escaping () -> Void) { self.run = run }
}
