"""Writes notebooks/tour.ipynb (the seed page's examples, in stres_jax): python notebooks/make_tour.py"""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
    md("# Spatiotemporal ResNet-18 for action recognition, in JAX\n\n"
       "The examples of the page this project started from (Wolfram's NetModel page of these nets), with "
       "`stres_jax`: the main action of a video and its top probabilities, the action over time, the stem's "
       "filters and kernels, the speed knob, a feature-space plot, net information and ONNX.\n\n"
       "It uses the published weights if `stres-jax fetch r2plus1d_18` has cached them, and random weights "
       "otherwise (then the labels are meaningless, but every cell runs; CI executes it that way)."),
    md("## The nets\n\nThree nets: 3D (`r3d_18`), Mixed (`mc3_18`) and (2+1)D (`r2plus1d_18`, the default)."),
    code("%matplotlib inline\nimport time\n\nimport matplotlib.pyplot as plt\nimport numpy as np\n\n"
         "from stres_jax import ClipRunner, ModelOptions, load_net, predict_video\n"
         "from stres_jax.checkpoints.fetch import default_checkpoint_dir\n"
         "from stres_jax.data.sampling import ClipPlan\n"
         "from stres_jax.models import ARCH_SPECS\n\n"
         "for name in ARCH_SPECS:  # the three variants, as the page's NetModel[..., \"Architecture\" -> ...]\n"
         "    spec = ARCH_SPECS[name]\n    print(f\"{name:12s} stem {spec.stem.__name__:14s} convolutions {[b.__name__ for b in spec.builders]}\")\n"
         "arch = \"r2plus1d_18\"\n"
         "random_init = not default_checkpoint_dir(arch).is_dir()\n"
         "net = load_net(ModelOptions(arch=arch, random_init=random_init))\n"
         "print(net.arch, \"with random weights\" if random_init else f\"from {net.directory}\")"),
    md("## Basic usage\n\nA video (the demo clip shipped with the package) and some of its frames:"),
    code("import tempfile\n\nimport IPython.display\n\n"
         "from stres_jax.data.decode import probe, read_frames\nfrom stres_jax.demo import DEMO_CLIP\n\n"
         "info = probe(DEMO_CLIP)\nframes = read_frames(DEMO_CLIP, np.linspace(0, info.num_frames - 1, 3).astype(int))\n"
         "plt.figure(figsize=(9, 2)); plt.imshow(np.concatenate(list(frames), axis=1)); plt.axis(\"off\");"),
    md("The main action of the video (torchvision's protocol: 15 fps, clips of 16 frames, softmax averaged), "
       "and the 10 most likely classes:"),
    code("runner = ClipRunner(net, batch_size=1)\n"
         "result = predict_video(runner, DEMO_CLIP, ClipPlan(clips=2), top=10)\n"
         "for entry in result[\"top\"]:\n    print(f\"{entry['probability']:.4f}  {entry['label']}\")"),
    md("The classes:"),
    code("print(len(net.labels), net.labels[:5])"),
    md("## The action over time\n\nOne clip per window of 32 video frames:"),
    code("over_time = predict_video(runner, DEMO_CLIP, ClipPlan(clips=1, window=32), top=1)\n"
         "for window in over_time[\"windows\"]:\n"
         "    print(f\"{window['start']:5.2f}-{window['end']:5.2f} s  {window['label']} ({window['probability']:.3f})\")"),
    md("As a picture (a thumbnail of each window, for a talk) and as probability curves (for a paper); "
       "`stres-jax predict VIDEO --window 32 --plot FILE.png` draws both:"),
    code("from stres_jax.figures import save_action_over_time, window_curves\n"
         "from stres_jax.predict import run_plan\n\n"
         "windows = run_plan(runner, DEMO_CLIP, ClipPlan(clips=1, window=32))\n"
         "curves = window_curves(over_time[\"windows\"], windows.window_probs, list(net.labels), result[\"top\"][0][\"label\"])\n"
         "picture = tempfile.mkdtemp() + \"/over_time.png\"\n"
         "save_action_over_time(windows.window_frames, over_time[\"windows\"], curves, picture)\n"
         "IPython.display.Image(picture)"),
    md("## Convolutional weights\n\nThe stem's first convolution (for (2+1)D: 45 spatial 7x7 filters, then temporal "
       "kernels of 3 steps):"),
    code("from stres_jax.figures import save_filters, stem_kernels\n\n"
         "for name, kernel in stem_kernels(net.variables).items():\n    print(name, kernel.shape)\n"
         "picture = tempfile.mkdtemp() + \"/filters.png\"\nsave_filters(net.variables, picture)\n"
         "IPython.display.Image(picture)"),
    md("## Net information\n\nParameters, layer types, GMACs per clip and kernel sizes:"),
    code("from stres_jax.netinfo import format_information, net_information\n\n"
         "information = net_information(net.model, net.arch)\nprint(format_information(information))"),
    md("The summary graphic: every block with its kernel shapes and output size:"),
    code("from stres_jax.figures import save_summary\n\n"
         "picture = tempfile.mkdtemp() + \"/summary.png\"\nsave_summary(information, picture)\n"
         "IPython.display.Image(picture)"),
    md("## The speed knob\n\nOne clip of N frames spread over the whole video instead of the protocol's clips:"),
    code("for plan in (ClipPlan(clips=2), ClipPlan(target_length=8)):\n"
         "    start = time.perf_counter()\n"
         "    top = predict_video(runner, DEMO_CLIP, plan, top=1)[\"top\"][0]\n"
         "    print(f\"{time.perf_counter() - start:6.2f} s  {top['label']} ({top['probability']:.3f})  {plan}\")"),
    md("## Feature space\n\nThe pooled 512-d features of each window, projected to two dimensions:"),
    code("from sklearn.decomposition import PCA\n\nfrom stres_jax.embed import window_embeddings\n\n"
         "arrays, _ = window_embeddings(runner, [DEMO_CLIP], ClipPlan(window=16))\n"
         "xy = PCA(2).fit_transform(arrays[\"window_embeddings\"])\n"
         "plt.scatter(*xy.T, c=arrays[\"window_start\"]); plt.colorbar(label=\"window start (s)\");"),
    md("## ONNX\n\nExport the net, check it with onnx, run it with onnxruntime (if installed) and import it back:"),
    code("import importlib.util\n\nimport jax\nimport onnx\n\n"
         "from stres_jax.export.onnx_io import to_onnx\n\n"
         "variables = load_net(ModelOptions(arch=arch, fold_batchnorm=False, random_init=random_init)).variables\n"
         "model = to_onnx(arch, variables, net.labels)\nonnx.checker.check_model(model)\n"
         "print(len(model.graph.node), \"nodes\")\n"
         "if importlib.util.find_spec(\"onnxruntime\"):\n    import onnxruntime\n"
         "    session = onnxruntime.InferenceSession(model.SerializeToString())\n"
         "    clip = np.random.default_rng(0).standard_normal((1, 3, 16, 112, 112)).astype(np.float32)  # NCTHW\n"
         "    print(session.run(None, {session.get_inputs()[0].name: clip})[0].shape)"),
    code("from stres_jax.export.onnx_io import from_onnx\n\n"
         "path = tempfile.mkdtemp() + \"/net.onnx\"\nonnx.save(model, path)\n"
         "imported_arch, imported, labels = from_onnx(path)\n"
         "same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(imported), jax.tree.leaves(variables)))\n"
         "print(imported_arch, len(labels), \"labels; the same weights:\", same)"),
]
notebook = nbf.v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                     "language": "python"}})
nbf.write(notebook, __import__("pathlib").Path(__file__).with_name("tour.ipynb"))
