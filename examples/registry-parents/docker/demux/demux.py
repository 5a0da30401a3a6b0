print("demux")
