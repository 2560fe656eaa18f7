// Types of views.js for the TypeScript of the JupyterLab panel (labextension/).

export interface TaskRecord {
  id: string;
  label: string;
  state: string;
  group: string;
  /** [cell_id, execution_count] of the notebook cell that submitted the task */
  cell: [string | null, number] | null;
  inputs: string[];
  node: string | null;
  pid: number | null;
  start: number | null;
  end: number | null;
}

export interface ViewsOptions {
  onSelect?: (task: TaskRecord) => void;
  request?: (msg: Record<string, unknown>) => void;
}

export interface Views {
  apply(msg: Record<string, unknown>): void;
  select(id: string): void;
  renderTimes: number[];
  applyTimes: number[];
  tasks: Map<string, TaskRecord>;
  destroy(): void;
}

export function createViews(root: HTMLElement, opts?: ViewsOptions): Views;

declare const _default: { render(props: { model: unknown; el: HTMLElement }): () => void };
export default _default;
