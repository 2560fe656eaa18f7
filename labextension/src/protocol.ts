// The messages the panel exchanges with the kernel (jray/jupyter/panel.py), and the
// event kinds of the stream (mirrors EventKind in jray/_private/events.py).

export const COMM_TARGET = 'jray.views';

/** Run silently in the kernel to register the comm target (needs jray importable). */
export const REGISTER_CODE =
  'try:\n    import jray.jupyter.panel as _jray_panel\n    _jray_panel.register()\n' +
  'except ImportError:\n    pass\n';

export type EventKind =
  | 'driver_connected' | 'driver_left' | 'node_added' | 'node_lost' | 'worker_started' | 'worker_died'
  | 'task_submitted' | 'task_waiting' | 'task_ready' | 'task_running' | 'task_blocked'
  | 'task_finished' | 'task_failed' | 'task_cancelled' | 'task_retried' | 'task_requeued'
  | 'task_reconstructing' | 'task_infeasible'
  | 'object_created' | 'object_pinned' | 'object_unpinned' | 'object_spilled'
  | 'object_restored' | 'object_freed'
  | 'actor_created' | 'actor_spawning' | 'actor_alive' | 'actor_restarting' | 'actor_dead'
  | 'actor_infeasible';

/** kernel -> panel */
export type FromKernel =
  | { type: 'full' | 'patch'; [key: string]: unknown }
  | { type: 'traceback'; id: string; text: string }
  | { type: 'no_cluster' };

/** panel -> kernel */
export type ToKernel = { type: 'hello' } | { type: 'traceback'; id: string };
