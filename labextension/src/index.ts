// The jray side panel: the live views of the cluster that the current notebook's kernel
// is connected to, drawn by the same renderer as the inline view (jray.dashboard()).
//
//   notebook tracker ──current notebook──▶ its kernel ──silent execute: register()──▶
//   comm "jray.views" ◀──full / patch / traceback / no_cluster── jray/jupyter/panel.py
//
// Data travels on the kernel's comm, over the Jupyter server's authenticated websocket:
// same origin, no extra port, no server route. ILabShell is not required, so the panel
// also loads in Notebook 7.

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { createViews, TaskRecord, Views } from '../../jray/views/static/views.js';
import { COMM_TARGET, FromKernel, REGISTER_CODE, ToKernel } from './protocol';

const ICON = new LabIcon({
  name: 'jray:views',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161"><circle cx="3" cy="4" r="2"/><circle cx="3" cy="12" r="2"/>' +
    '<circle cx="13" cy="8" r="2.5"/><path d="M4.5 4.6 11 7.4l-.4.9L4.1 5.5zM4.1 10.5l6.5-2.8.4.9-6.5 2.8z"/></g></svg>'
});

class JrayPanel extends Widget {
  private status: HTMLElement;
  private host: HTMLElement;
  private views: Views | null = null;
  private comm: Kernel.IComm | null = null;
  private notebook: NotebookPanel | null = null;
  private generation = 0;

  constructor() {
    super();
    this.id = 'jray-views-panel';
    this.title.icon = ICON;
    this.title.caption = 'jray';
    this.title.label = '';
    this.addClass('jray-panel');
    this.node.style.overflow = 'auto';
    this.node.style.padding = '4px';
    this.status = document.createElement('div');
    this.status.className = 'jray-panel-status';
    this.status.setAttribute('role', 'status');
    this.host = document.createElement('div');
    const heading = document.createElement('h3');
    heading.textContent = 'jray';
    heading.style.margin = '2px 0';
    this.node.append(heading, this.status, this.host);
    this.say('Open a notebook to see its jray cluster.');
  }

  private say(text: string): void {
    this.status.textContent = text;
    this.status.style.display = text ? '' : 'none';
  }

  follow(panel: NotebookPanel | null): void {
    if (panel === this.notebook) {
      return;
    }
    this.notebook = panel;
    void this.connect();
    panel?.sessionContext.kernelChanged.connect(() => {
      if (this.notebook === panel) {
        void this.connect();
      }
    });
  }

  private reset(): void {
    const gen = ++this.generation;
    if (this.comm && !this.comm.isDisposed) {
      try {
        this.comm.close();
      } catch {
        // the kernel may be gone already
      }
    }
    this.comm = null;
    this.views?.destroy();
    this.views = null;
    this.host.replaceChildren();
    void gen;
  }

  private async connect(): Promise<void> {
    this.reset();
    const gen = this.generation;
    const panel = this.notebook;
    if (!panel) {
      this.say('Open a notebook to see its jray cluster.');
      return;
    }
    this.say(`Connecting to the kernel of ${panel.context.path}…`);
    await panel.sessionContext.ready;
    const kernel = panel.sessionContext.session?.kernel;
    if (gen !== this.generation) {
      return;
    }
    if (!kernel) {
      this.say(`${panel.context.path} has no kernel, so no jray cluster.`);
      return;
    }
    const future = kernel.requestExecute({ code: REGISTER_CODE, silent: true, store_history: false });
    await future.done;
    if (gen !== this.generation) {
      return;
    }
    const comm = kernel.createComm(COMM_TARGET);
    this.comm = comm;
    this.views = createViews(this.host, {
      request: (msg: Record<string, unknown>) => this.send(msg as ToKernel),
      onSelect: (task: TaskRecord) => this.scrollTo(panel, task)
    });
    (window as unknown as { __jrayPanelViews?: Views }).__jrayPanelViews = this.views;
    this.host.style.display = 'none';
    comm.onMsg = msg => {
      if (gen === this.generation) {
        this.receive(msg.content.data as unknown as FromKernel);
      }
    };
    comm.onClose = () => {
      if (gen === this.generation) {
        this.say(`The kernel of ${panel.context.path} has no jray (it closed the views' comm).`);
        this.host.style.display = 'none';
      }
    };
    comm.open({});
    this.send({ type: 'hello' });
    this.say(`Waiting for jray in the kernel of ${panel.context.path}…`);
  }

  private send(msg: ToKernel): void {
    if (this.comm && !this.comm.isDisposed) {
      this.comm.send(msg as unknown as Record<string, never>);
    }
  }

  private receive(msg: FromKernel): void {
    if (msg.type === 'no_cluster') {
      this.say("This notebook's kernel has no jray cluster yet (jray.init() starts one).");
      this.host.style.display = 'none';
      return;
    }
    if (msg.type === 'full') {
      this.say('');
      this.host.style.display = '';
    }
    this.views?.apply(msg as unknown as Record<string, unknown>);
  }

  private scrollTo(panel: NotebookPanel, task: TaskRecord): void {
    const cellId = task.cell ? task.cell[0] : null;
    if (!cellId) {
      return;
    }
    const nb = panel.content;
    const index = nb.widgets.findIndex(cell => cell.model.id === cellId);
    if (index < 0) {
      return;
    }
    nb.activeCellIndex = index;
    void nb.scrollToCell(nb.widgets[index]);
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jray-labextension:panel',
  description: 'The jray live views in a side panel',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    const panel = new JrayPanel();
    app.shell.add(panel, 'left', { rank: 900 });
    panel.follow(tracker.currentWidget);
    tracker.currentChanged.connect((_, current) => panel.follow(current));
  }
};

export default plugin;
